"""Runner: mistral.rs's in-process Python API, answering with the same OpenAI objects the server sends.

    runner = Runner(which=Which.GGUF(quantized_model_id="models", quantized_filename="model.gguf"))
    res = runner.send_chat_completion_request(ChatCompletionRequest(model="default", messages=[...]))

Requests go through the server's own request -> response code (server/serving_chat.py, serving_completion.py) on
a private event loop thread, so every call is synchronous and works from scripts and from inside a running event
loop alike. A streamed request returns a synchronous iterator of chunks; dropping it early aborts the request.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .config import EngineConfig
from .engine.async_engine import AsyncEngine
from .engine.engine import Engine
from .errors import InvalidRequestError
from .loop_thread import LoopThread
from .server.context import ServerContext
from .server.protocol import ChatCompletionRequest, CompletionRequest
from .server.responses import ChatCompletionChunk, ChatCompletionResponse, CompletionResponse
from .server.serving_chat import chat_completion
from .server.serving_completion import completion
from .server.streaming import ChunkStream
from .structured.compile_cache import GrammarCompiler
from .tokenizer import Tokenizer
from .which import GGUF, Plain, reject_unsupported
from .which.xlora import check_layers

T = TypeVar("T")
MODEL_NAME = "default"

_NONE = (None,)
_NO_TOOLS = "tools, search and agents are not implemented in mistralpy"
# mistral.rs's Runner parameters mistralpy does not implement -> (values that ask for nothing, why).
_UNSUPPORTED = {
    "no_kv_cache": ((False,), "the paged KV cache is always on"),
    "token_source": (("cache", "none"), "mistralpy loads local paths only, so it needs no Hugging Face token"),
    "mtp_model": (_NONE, "speculative decoding is not implemented in mistralpy"),
    "mtp_n_predict": (_NONE, "speculative decoding is not implemented in mistralpy"),
    "chat_template": (_NONE, "the chat template comes from the model's files (tokenizer_config.json or GGUF)"),
    "jinja_explicit": (_NONE, "the chat template comes from the model's files (tokenizer_config.json or GGUF)"),
    "num_device_layers": (_NONE, "device mapping is not implemented in mistralpy"),
    "pa_gpu_mem": (_NONE, "size the KV cache in tokens with pa_ctxt_len"),
    "pa_gpu_mem_usage": (_NONE, "size the KV cache in tokens with pa_ctxt_len"),
    "no_paged_attn": ((False,), "attention is always paged"),
    "paged_attn": ((False, True), "attention is always paged"),
    "enable_search": ((False,), _NO_TOOLS),
    "search_embedding_model": (_NONE, _NO_TOOLS),
    "search_callback": (_NONE, _NO_TOOLS),
    "tool_callbacks": (_NONE, _NO_TOOLS),
    "mcp_client_config": (_NONE, _NO_TOOLS),
    "code_execution_config": (_NONE, _NO_TOOLS),
    "shell_config": (_NONE, _NO_TOOLS),
}


class Runner:
    """Load a model and serve OpenAI-shaped requests in-process (mistral.rs's `mistralrs.Runner`).

    - `which`: `Which.GGUF(...)`, `Which.GGML(...)` or `Which.Plain(...)`; with LoRA adapters `Which.LoraGGUF(...)`,
      `Which.LoraGGML(...)` (a mistral.rs ordering file) or `Which.Lora(...)`: requests select adapters with
      `adapters=[names]` or `model=name`; with an X-LoRA model `Which.XLora(...)`, `Which.XLoraGGUF(...)`,
      `Which.XLoraGGML(...)`, run for every request (`tgt_non_granular_index`: lora/xlora/non_granular.py).
    - `max_seqs`: sequences batched together at most.
    - `prefix_cache_n`: 0 turns prefix caching off; any positive value leaves it on (mistralpy caches KV blocks,
      bounded by the KV pool, not a number of sequences).
    - `in_situ_quant`: quantize full-precision weights at load: "Q4_0", "Q4_1", "Q8_0" or "Q4K".
    - `pa_ctxt_len`: tokens the KV cache holds (at least max_model_len); `pa_blk_size`: tokens per KV block.
    - `pa_cache_type`: "auto" (K/V in the compute dtype) or "int8" (int8 rows and a scale each; mistralpy's
      counterpart of mistral.rs's "f8e4m3", which it does not implement); None: int8 for quantized weights, else
      auto.
    - `anymoe_config`: an AnyMoE mixture over the model's MLPs (`mistralpy.lora.anymoe.AnyMoeConfig`, its dict
      form or a .json / .toml file), its gates trained at load or read from its gate_model_id.
    - `seed`: requests without a seed get one drawn from a generator seeded with this, so a run is reproducible.
    - mistralpy's own: `max_model_len` (default: the model's context), `max_num_batched_tokens` (per-step budget;
      default 512 for generation, 16384 for embeddings).
    """

    def __init__(
        self,
        which: GGUF | Plain,
        max_seqs: int = 64,
        prefix_cache_n: int = 16,
        in_situ_quant: str | None = None,
        pa_ctxt_len: int | None = None,
        pa_blk_size: int | None = None,
        pa_cache_type: str | None = None,
        seed: int | None = None,
        anymoe_config: Any = None,
        *,
        max_model_len: int | None = None,
        max_num_batched_tokens: int | None = None,
        **unsupported: Any,
    ) -> None:
        reject_unsupported("Runner", unsupported, _UNSUPPORTED)
        if not isinstance(which, (GGUF, Plain)):
            raise InvalidRequestError(
                f"which must be Which.GGUF(...), Which.GGML(...) or Which.Plain(...), got {which!r}"
            )
        if isinstance(prefix_cache_n, bool) or not isinstance(prefix_cache_n, int) or prefix_cache_n < 0:
            raise InvalidRequestError(f"prefix_cache_n must be an integer >= 0, got {prefix_cache_n!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidRequestError(f"seed must be an integer, got {seed!r}")
        spec = which.resolve()
        config = EngineConfig(
            model=spec.model,
            dtype=spec.dtype,
            max_num_seqs=max_seqs,
            enable_prefix_caching=prefix_cache_n > 0,
            quantization=_isq_name(in_situ_quant),
            max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens,
            gqa=spec.gqa,
            kv_cache_dtype=pa_cache_type,
            **({"kv_cache_tokens": pa_ctxt_len} if pa_ctxt_len is not None else {}),
            **({"block_size": pa_blk_size} if pa_blk_size is not None else {}),
            **(spec.adapters.engine_options() if spec.adapters is not None else {}),
            xlora=spec.xlora,
            xlora_non_granular=spec.xlora_non_granular,
            anymoe=anymoe_config,
        )
        engine = Engine(config)
        if spec.tokenizer is not None:
            _use_tokenizer(engine, Tokenizer.from_folder(spec.tokenizer), spec.tokenizer)
        self.which = which
        self.engine = AsyncEngine(engine)
        self._seeds = random.Random(seed) if seed is not None else None
        self._ctx = ServerContext(self.engine, MODEL_NAME, server="this runner")
        if spec.adapters is not None:  # each adapter read and checked against the model now
            for adapter in spec.adapters.modules.values():
                engine.lora.read(adapter)
            self._ctx.lora_modules, self._ctx.lora_default = dict(spec.adapters.modules), spec.adapters.default
        if spec.xlora is not None:  # the X-LoRA model runs every request, as in mistral.rs
            check_layers(engine.lora.model.layer_numbers, spec.xlora_layers, getattr(which, "order", ""))
            xlora = engine.lora.request
            self._ctx.lora_modules, self._ctx.lora_default = {xlora.lora_name: xlora}, (xlora.lora_name,)
        self._thread = LoopThread()
        self._thread.run(_start(self.engine))

    def send_chat_completion_request(
        self, request: ChatCompletionRequest, model_id: str | None = None
    ) -> ChatCompletionResponse | Iterator[ChatCompletionChunk]:
        """A ChatCompletionResponse, or with `stream=True` an iterator of ChatCompletionChunk."""
        body = self._prepare(request, ChatCompletionRequest, model_id)
        return self._answer(chat_completion(self._ctx, body))

    def send_completion_request(
        self, request: CompletionRequest, model_id: str | None = None
    ) -> CompletionResponse | Iterator[CompletionResponse]:
        """A CompletionResponse, or with `stream=True` an iterator of CompletionResponse chunks."""
        body = self._prepare(request, CompletionRequest, model_id)
        return self._answer(completion(self._ctx, body))

    def tokenize_text(
        self,
        text: str,
        add_special_tokens: bool = True,
        enable_thinking: bool | None = None,
        model_id: str | None = None,
    ) -> list[int]:
        self._ctx.check_model(model_id)
        if not isinstance(text, str):
            raise InvalidRequestError(f"text must be a string, got {type(text).__name__}")
        if enable_thinking is not None:
            raise InvalidRequestError("enable_thinking applies to chat templates; tokenize_text renders none")
        return self.engine.tokenizer.encode(text, add_special_tokens=bool(add_special_tokens))

    def detokenize_text(self, tokens: list[int], skip_special_tokens: bool = True, model_id: str | None = None) -> str:
        self._ctx.check_model(model_id)
        vocab = self.engine.engine.model_config.vocab_size
        if not isinstance(tokens, (list, tuple)):
            raise InvalidRequestError(f"tokens must be a list of token ids, got {type(tokens).__name__}")
        bad = [t for t in tokens if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(f"token ids {bad[:5]} are outside the vocabulary (size {vocab})")
        return self.engine.tokenizer.decode(list(tokens), skip_special_tokens=bool(skip_special_tokens))

    def max_sequence_length(self, model_id: str | None = None) -> int:
        """The context length requests must fit in: prompt plus generated tokens."""
        self._ctx.check_model(model_id)
        return self.engine.max_model_len

    def call(self, fn: Callable[[Engine], T]) -> T:
        """Run fn(engine) on the engine's thread between steps (a consistent read of its state)."""
        return self._thread.run(self.engine.call(fn))

    def close(self) -> None:
        """Stop the engine and the event loop threads; open streams end with EngineDeadError."""
        if not self._thread.closed:
            self._thread.run(self.engine.shutdown())
            self._thread.stop()

    def __del__(self) -> None:
        # Dropped without close() (say, a notebook cell run again): stop the threads so the model can be freed.
        thread = getattr(self, "_thread", None)
        if thread is not None and not thread.closed:
            thread.submit(_shutdown(self.engine, thread))

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare(self, request: Any, kind: type[T], model_id: str | None) -> T:
        if not isinstance(request, kind):
            raise InvalidRequestError(f"expected a {kind.__name__}, got {type(request).__name__}")
        self._ctx.check_model(model_id)
        if self._seeds is not None and request.seed is None:
            request = request.model_copy(update={"seed": self._seeds.getrandbits(63)})
        return request

    def _answer(self, work: Any) -> Any:
        result = self._thread.run(work)
        return self._thread.iterate(result) if isinstance(result, ChunkStream) else result


async def _start(engine: AsyncEngine) -> None:
    engine.start()  # binds the engine's outputs to the running loop: the runner's own


async def _shutdown(engine: AsyncEngine, thread: LoopThread) -> None:
    await engine.shutdown()
    thread.stop()


def _isq_name(name: str | None) -> str | None:
    """mistral.rs's ISQ names ("Q4K", "Q8_0") -> mistralpy's ("q4_k", "q8_0"); EngineConfig rejects the rest."""
    if name is None or not isinstance(name, str):
        return name
    k_quant = re.fullmatch(r"[qQ](\d)[kK]", name)
    return f"q{k_quant.group(1)}_k" if k_quant else name.lower()


def _use_tokenizer(engine: Engine, tokenizer: Tokenizer, where: str) -> None:
    """Replace the model's own tokenizer (Which.GGUF's tok_model_id) before any request is added."""
    vocab = engine.model_config.vocab_size
    if tokenizer.vocab_size > vocab:
        raise InvalidRequestError(
            f"the tokenizer in {where} has {tokenizer.vocab_size} tokens; the model's vocabulary has {vocab}"
        )
    engine.tokenizer = engine.output_processor.tokenizer = tokenizer
    engine.eos_token_ids = frozenset(tokenizer.eos_token_ids) | frozenset(engine.model_config.eos_token_ids)
    engine.grammar_compiler = GrammarCompiler(tokenizer, engine.eos_token_ids, vocab)  # masks over this vocabulary
