"""LLM: the synchronous, vLLM-shaped Python API over the engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from .chat_template import check_chat_template
from .config import EngineConfig
from .embed.outputs import EmbeddingRequestOutput
from .engine.engine import Engine
from .errors import InvalidRequestError
from .llm_inputs import as_lora_list, as_params_list, as_prompt_list
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
    for quantized weights (measured on the embedded model: no perplexity loss in bfloat16, +0.14% in float32) and
    "auto" else.
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
    `max_loras` adapters of rank up to `max_lora_rank` are loaded at once (an idle one is unloaded for a new one),
    their ranks summed at most `max_lora_total_rank` (None: no limit). `lora_merge`: PEFT adapter folders (or
    (folder, weight) pairs) whose weighted sum is folded into the weights at load (`mistralpy.lora.merge`).
    `xlora`: an X-LoRA model's folder (PEFT's layout) over this base; `generate` runs it for every prompt unless given
    `lora_request` (a list: None for the plain base, `llm.xlora_request` for X-LoRA). `xlora_log`: a file the
    classifier's scalings are appended to (JSON lines, lora/xlora/scalings_log.py). `xlora_non_granular`: mistral.rs's
    tgt_non_granular_index (lora/xlora/non_granular.py).
    `anymoe`: an AnyMoE mixture over the model's MLPs (`mistralpy.lora.anymoe.AnyMoeConfig`, its dict form or a
    .json / .toml file's path), its gates trained at load unless read from its gate_model_id.
    `speculative_config`: speculative decoding, vLLM's form: {"method": "ngram", "num_speculative_tokens": K,
    "prompt_lookup_min": .., "prompt_lookup_max": ..} or {"model": PATH, "num_speculative_tokens": K,
    "quantization": ISQ} (a draft model with this model's tokenizer); "adaptive_k": False keeps K fixed
    (spec_decode.config.SpeculativeConfig); output is unchanged.
    `task`: "generate" or "embed" (`embed`); None is "embed" for an encoder (BERT) and "generate" else; with
    "embed" and no model, the embedded all-MiniLM-L6-v2. `pooling` ("mean", "cls", "last"): how embeddings pool a
    prompt's hidden states; None takes a sentence-transformers folder's own, else cls (encoders) or last (decoders).
    `generation_config`: the sampling defaults of `get_default_sampling_params` and the server: "auto" (the model
    folder's generation_config.json), "vllm" (none), or a generation_config.json's path (or its folder's).
    `mmproj`: a llama.cpp projector GGUF (Gemma 3's) that gives a Gemma 3 text GGUF its vision tower (images in chat).
    `tensor_parallel_size`: ranks the model is sharded over (torch.distributed; under torchrun: run_if_worker_rank).
    `device`: "auto" (CUDA when torch sees it), "cpu", "cuda" or "cuda:N"; `gpu_memory_utilization` (CUDA only):
    the share of GPU memory the engine fills, its KV pool sized to it (default 0.9). `kernels`: device.py.
    `device_layers` ("cuda:0:20;cpu:10") / `n_gpu_layers` (llama.cpp's -ngl): decoder layers split between devices,
    each layer's KV cache on its device (mistralpy.engine.device_map). `enforce_eager`: no CUDA graphs for decode
    steps (a model on one CUDA device replays them, engine/graph_runner.py; on the CPU steps always run eagerly).
    """

    def __init__(
        self,
        model: str | None = None,
        dtype: str = "auto",
        *,
        max_model_len: int | None = None,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int | None = None,
        block_size: int = 16,
        num_kv_blocks: int | None = None,
        kv_cache_tokens: int = 16384,
        kv_cache_dtype: str | None = None,
        enable_prefix_caching: bool = True,
        prefix_cache_tokens: int | None = None,
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
        xlora: str | None = None,
        xlora_log: str | None = None,
        xlora_non_granular: int | None = None,
        anymoe: Any = None,
        max_lora_total_rank: int | None = None,
        lora_merge: Sequence[str | tuple[str, float]] = (),
        speculative_config: dict[str, Any] | None = None,
        task: str | None = None,
        pooling: str | None = None,
        generation_config: str = "auto",
        mmproj: str | None = None,
        tensor_parallel_size: int = 1,
        device: str = "auto",
        gpu_memory_utilization: float | None = None,
        kernels: str | None = None,
        device_layers: str | None = None,
        n_gpu_layers: int | None = None,
        enforce_eager: bool = False,
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
            prefix_cache_tokens=prefix_cache_tokens,
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
            xlora=xlora,
            xlora_log=xlora_log,
            xlora_non_granular=xlora_non_granular,
            anymoe=anymoe,
            max_lora_total_rank=max_lora_total_rank,
            lora_merge=lora_merge,
            speculative_config=speculative_config,
            task=task,
            pooling=pooling,
            generation_config=generation_config,
            mmproj=mmproj,
            tensor_parallel_size=tensor_parallel_size,
            device=device,
            gpu_memory_utilization=gpu_memory_utilization,
            kernels=kernels,
            device_layers=device_layers,
            n_gpu_layers=n_gpu_layers,
            enforce_eager=enforce_eager,
        )
        self.engine = Engine(self.config)
        self.xlora_request: LoRARequest | None = self.engine.lora.request if xlora is not None else None

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
        prompts = as_prompt_list(prompts)
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        params = as_params_list(sampling_params, len(prompts))
        loras = as_lora_list(self.xlora_request if lora_request is None else lora_request, len(prompts))
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
        chat_template: str | None = None,
    ) -> list[RequestOutput]:
        """Apply the chat template (`chat_template`'s text for this call, else LLM's, else the model's) to one
        conversation (a list of messages) or a list of them.

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
        template = check_chat_template(chat_template) if chat_template is not None else tokenizer.chat_template
        tool_use = ToolUse(tools_spec(tools, tool_choice, parallel_tool_calls), template)
        prompts = []
        for conv in conversations:
            conv, images = split_images(conv)
            expand = self.engine.images.expand_text if images and self.engine.images.spec_or_error() else None
            ids = tool_use.render(tokenizer, conv, add_generation_prompt, chat_template_kwargs, expand)
            prompts.append({"prompt_token_ids": ids, "multi_modal_data": {"image": images}} if images else ids)
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        params = [tool_use.sampling_params(p, tokenizer) for p in as_params_list(sampling_params, len(prompts))]
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
            for prompt, salt, images in as_prompt_list(prompts):
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
