"""LLM: the synchronous, vLLM-shaped Python API over the engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from .config import EngineConfig
from .embed.outputs import EmbeddingRequestOutput
from .engine.engine import Engine
from .errors import InvalidRequestError
from .lora.request import LoRARequest
from .multimodal.chat_parts import split_images
from .outputs import RequestOutput
from .sampling_params import SamplingParams
from .tokenizer import Tokenizer
from .tools import ToolUse, tools_spec

PromptType = str | list[int] | dict[str, Any]
_GENERATION_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class LLM:
    """Load a model (a GGUF file, a Hugging Face folder, or None for the embedded default) and generate, or embed.

    `dtype` is the compute dtype: "auto" (fastest on this device), "float32", "bfloat16" or "float16".
    `weights`: "auto" keeps a GGUF file's quantized weights quantized when computing in bfloat16 or float32 (on every
    ISA level: kernels/isa_level.py), "quantized" always,
    "dequantized" never (every weight becomes a dense `dtype` tensor: their float reference).
    `quantization`: quantize full-precision Linear weights at load (ISQ): "q4_0", "q4_1", "q8_0" or "q4_k".
    `kv_cache_dtype`: "auto" keeps K/V in the compute dtype; "int8" keeps each head's row as int8 codes and a float32
    scale (like llama.cpp's q8_0 cache type), about half the memory a sequence takes in bfloat16. Unset, it is "int8"
    for quantized weights computed in bfloat16 (measured: no perplexity loss on the embedded model) and "auto" else.
    `gqa`, `rope_theta`, `rms_norm_eps`: what a legacy GGML file does not record (its grouped-query factor
    n_head / n_head_kv, RoPE base, RMSNorm epsilon; default 1, 10000, 5e-6), and `max_model_len` its context length
    (default 2048). They are an error for a GGUF file or HF folder, which record their own.
    `chat_template`: a Jinja chat template's text, used instead of the model's own (by `chat`, and by the server
    and Runner built on this engine); one that does not parse is an error here.
    `num_threads`: CPU threads for the model. None (default) adapts them, between steps, to the cores other
    processes leave idle, up to torch's thread count (`mistralpy.threads.ThreadPolicy`): on a busy machine a parallel
    op waits for its slowest thread, so fewer threads go faster. An integer (or the environment variable
    MISTRALPY_NUM_THREADS, where None is given) fixes them: float32 results depend on it. Either way the engine sets
    torch's thread count (`torch.set_num_threads`) on the threads that load the model and run its steps.
    `enable_lora`: requests may name a LoRA adapter (`generate(..., lora_request=LoRARequest(...))`); up to
    `max_loras` adapters of rank up to `max_lora_rank` are loaded at once (an idle one is unloaded for a new one).
    `speculative_config`: speculative decoding, vLLM's form: {"method": "ngram", "num_speculative_tokens": K,
    "prompt_lookup_min": .., "prompt_lookup_max": ..} (spec_decode.config.SpeculativeConfig); output is unchanged.
    `task`: "generate" or "embed" (`embed`); None is "embed" for an encoder (BERT) and "generate" else; with
    "embed" and no model, the embedded all-MiniLM-L6-v2. `pooling` ("mean", "cls", "last"): how embeddings pool a
    prompt's hidden states; None takes a sentence-transformers folder's own, else cls (encoders) or last (decoders).
    `generation_config`: the sampling defaults of `get_default_sampling_params` and the server: "auto" (the model
    folder's generation_config.json), "vllm" (none), or a generation_config.json's path (or its folder's).
    `mmproj`: a llama.cpp projector GGUF (Gemma 3's) that gives a Gemma 3 text GGUF its vision tower (images in chat).
    """

    def __init__(
        self,
        model: str | None = None,
        dtype: str = "auto",
        *,
        max_model_len: int | None = None,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 512,
        block_size: int = 16,
        num_kv_blocks: int | None = None,
        kv_cache_tokens: int = 16384,
        kv_cache_dtype: str | None = None,
        enable_prefix_caching: bool = True,
        show_progress: bool = False,
        weights: str = "auto",
        quantization: str | None = None,
        gqa: int | None = None,
        rope_theta: float | None = None,
        rms_norm_eps: float | None = None,
        chat_template: str | None = None,
        num_threads: int | None = None,
        enable_lora: bool = False,
        max_loras: int = 4,
        max_lora_rank: int = 16,
        speculative_config: dict[str, Any] | None = None,
        task: str | None = None,
        pooling: str | None = None,
        generation_config: str = "auto",
        mmproj: str | None = None,
    ) -> None:
        self.config = EngineConfig(
            model=model,
            dtype=dtype,
            block_size=block_size,
            num_kv_blocks=num_kv_blocks,
            kv_cache_tokens=kv_cache_tokens,
            kv_cache_dtype=kv_cache_dtype,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            show_progress=show_progress,
            weights=weights,
            quantization=quantization,
            gqa=gqa,
            rope_theta=rope_theta,
            rms_norm_eps=rms_norm_eps,
            chat_template=chat_template,
            num_threads=num_threads,
            enable_lora=enable_lora,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
            speculative_config=speculative_config,
            task=task,
            pooling=pooling,
            generation_config=generation_config,
            mmproj=mmproj,
        )
        self.engine = Engine(self.config)

    def get_tokenizer(self) -> Tokenizer:
        return self.engine.tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams() with the model's generation_config.json defaults applied (as vLLM does)."""
        defaults = self.engine.generation_defaults
        kwargs = {key: defaults[key] for key in _GENERATION_KEYS if key in defaults}
        if "max_new_tokens" in defaults:
            kwargs["max_tokens"] = defaults["max_new_tokens"]
        return SamplingParams(**kwargs)

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = False,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """`lora_request`: the LoRA adapter of every prompt, or a list of one per prompt (None: the base model)."""
        prompts = _as_prompt_list(prompts)
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        params = _as_params_list(sampling_params, len(prompts))
        loras = _as_lora_list(lora_request, len(prompts))
        ids = []
        try:
            for (prompt, salt, images), p, lora in zip(prompts, params, loras, strict=True):
                ids.append(self.engine.add_request(prompt, p, cache_salt=salt, lora_request=lora, images=images))
        except BaseException:
            for rid in ids:
                self.engine.abort_request(rid)
            raise
        return self._run(ids, use_tqdm)

    def chat(
        self,
        messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = False,
        add_generation_prompt: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Apply the chat template (the model's, or LLM's `chat_template`) to one conversation (a list of messages) or
        a list of them.

        `tools` (OpenAI's function tools), `tool_choice` ("auto", "none", "required" or
        {"type": "function", "function": {"name": ...}}) and `parallel_tool_calls` work as in the server: each
        output's `tool_calls` holds the calls read from its text ("required", a named tool or a strict tool make
        them follow the tools' schemas). Where the template has a think block (Qwen3, DeepSeek-R1), each output's
        `reasoning_content` holds its thinking; `chat_template_kwargs={"enable_thinking": False}` reaches the
        template.

        Image parts (multimodal/chat_parts.py: image_url with a data: URL or a path, or a PIL image) go to a
        vision-language model; a text-only model refuses them."""
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError("messages must be a non-empty list of messages or of conversations")
        conversations = messages if isinstance(messages[0], list) else [messages]
        tokenizer = self.get_tokenizer()
        tool_use = ToolUse(tools_spec(tools, tool_choice, parallel_tool_calls), tokenizer.chat_template)
        prompts = []
        for conv in conversations:
            conv, images = split_images(conv)
            expand = self.engine.images.expand_text if images and self.engine.images.spec_or_error() else None
            ids = tool_use.render(tokenizer, conv, add_generation_prompt, chat_template_kwargs, expand)
            prompts.append({"prompt_token_ids": ids, "multi_modal_data": {"image": images}} if images else ids)
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        params = [tool_use.sampling_params(p, tokenizer) for p in _as_params_list(sampling_params, len(prompts))]
        results = self.generate(prompts, params, use_tqdm, lora_request)
        for result in results:
            for output in result.outputs:
                parsed = tool_use.parse(output.text)
                output.tool_calls, output.reasoning_content = parsed.calls or None, parsed.reasoning
        return results

    def embed(
        self, prompts: PromptType | Sequence[PromptType], dimensions: int | None = None, use_tqdm: bool = False
    ) -> list[EmbeddingRequestOutput]:
        """One embedding per prompt (a string, token ids, or a list of them), in order: `out.outputs.embedding`.
        The model must be served for embeddings: an encoder (task "embed" by default), or a decoder with
        task="embed" (pooled by `pooling`). `dimensions`: a Matryoshka model's shorter vectors."""
        ids = []
        try:
            for prompt, salt, images in _as_prompt_list(prompts):
                if images:
                    raise InvalidRequestError("images do not apply to embeddings")
                if salt is not None:
                    raise InvalidRequestError("cache_salt does not apply to embeddings: they never share cached blocks")
                ids.append(self.engine.add_embed_request(prompt, dimensions))
        except BaseException:
            for rid in ids:
                self.engine.abort_request(rid)
            raise
        return self._run(ids, use_tqdm)

    def _run(self, ids: list[str], use_tqdm: bool) -> list:
        finished: dict[str, RequestOutput | EmbeddingRequestOutput] = {}
        bar = tqdm(total=len(ids), desc="Generating", unit="req", disable=not use_tqdm)
        try:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        finished[out.request_id] = out
                        bar.update(1)
        except BaseException:
            for rid in ids:
                self.engine.abort_request(rid)
            raise
        finally:
            bar.close()
        return [finished[rid] for rid in ids]


def _as_prompt_list(prompts: Any) -> list[tuple[str | list[int], str | None, list | None]]:
    """-> (prompt, cache_salt, images) triples."""
    if isinstance(prompts, (str, dict)):
        return [_normalise_prompt(prompts)]
    if isinstance(prompts, Sequence) and prompts and all(isinstance(t, int) for t in prompts):
        return [(list(prompts), None, None)]
    if not isinstance(prompts, Sequence) or not prompts:
        raise InvalidRequestError("prompts must be a string, a list of strings or a list of token-id lists")
    return [_normalise_prompt(p) for p in prompts]


_PROMPT_KEYS = ("prompt", "prompt_token_ids", "cache_salt", "multi_modal_data")


def _normalise_prompt(prompt: Any) -> tuple[str | list[int], str | None, list | None]:
    salt = images = None
    if isinstance(prompt, dict):
        unknown = [k for k in prompt if k not in _PROMPT_KEYS]
        if unknown:
            raise InvalidRequestError(f"unknown prompt keys {unknown}; a prompt dict takes {', '.join(_PROMPT_KEYS)}")
        salt, images = prompt.get("cache_salt"), _images(prompt.get("multi_modal_data"))
        if "prompt_token_ids" in prompt:
            prompt = prompt["prompt_token_ids"]
        elif "prompt" in prompt:
            prompt = prompt["prompt"]
        else:
            raise InvalidRequestError("a prompt dict needs a 'prompt' or 'prompt_token_ids' key")
    if isinstance(prompt, str):
        return prompt, salt, images
    if isinstance(prompt, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return list(prompt), salt, images
    raise InvalidRequestError(f"a prompt must be a string or a list of token ids, got {type(prompt).__name__}")


def _images(data: Any) -> list | None:
    """vLLM's multi_modal_data: {"image": one image or a list} (a PIL image, bytes, a path or a data: URL)."""
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - {"image"}:
        raise InvalidRequestError('multi_modal_data takes {"image": an image or a list of images}')
    images = data.get("image")
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _as_params_list(params: Any, n: int) -> list[SamplingParams]:
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n or not all(isinstance(p, SamplingParams) for p in params):
        raise InvalidRequestError(f"sampling_params must be one SamplingParams or a list of {n}")
    return params


def _as_lora_list(lora: Any, n: int) -> list[LoRARequest | None]:
    if lora is None or isinstance(lora, LoRARequest):
        return [lora] * n
    loras = list(lora) if isinstance(lora, Sequence) and not isinstance(lora, str) else None
    if loras is None or len(loras) != n or not all(r is None or isinstance(r, LoRARequest) for r in loras):
        raise InvalidRequestError(f"lora_request must be one LoRARequest or a list of {n} (LoRARequest or None)")
    return loras
