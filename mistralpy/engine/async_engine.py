"""AsyncEngine: one Engine stepped by a background thread; per-request async streams of delta outputs.

Only the loop thread ever touches the Engine. Callers send it commands (add, abort, any read) through a queue it
drains between steps, so add/abort/step never race and no lock is held across a model forward pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..config import EngineConfig
from ..errors import GenerationError, MistralpyError
from ..heap import trim_heap
from ..outputs import RequestOutput
from ..sampling_params import SamplingParams
from .engine import Engine

if TYPE_CHECKING:
    import llguidance

    from ..lora.request import LoRARequest

logger = logging.getLogger(__name__)
T = TypeVar("T")


class LatencyObserver(Protocol):
    """Told, on the loop thread, when a request gets its first token, each later output, and its end."""

    def on_first_token(self, seconds: float) -> None: ...
    def on_next_token(self, seconds: float) -> None: ...
    def on_finished(self, seconds: float) -> None: ...


class EngineDeadError(MistralpyError):
    """The engine loop has stopped (shutdown, or a step failed); no request can be served."""


class RequestStream:
    """The delta RequestOutputs of one request, as `Engine.step(delta=True)` makes them (OutputProcessor)."""

    def __init__(self, request_id: str, engine: AsyncEngine) -> None:
        self.request_id = request_id
        self._engine = engine
        self._queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self.finished = False
        self.arrival = time.monotonic()
        self._last_token_time: float | None = None

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.abort()
            raise
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        self.finished = item.finished
        return item

    def abort(self) -> None:
        """Stop generating and free the request's KV blocks (a no-op once it has finished)."""
        if not self.finished:
            self.finished = True
            self._engine.abort(self.request_id)

    def _observe(self, delta: RequestOutput, observer: LatencyObserver) -> None:
        now = time.monotonic()
        if any(c.token_ids for c in delta.outputs):
            if self._last_token_time is None:
                observer.on_first_token(now - self.arrival)
            else:
                observer.on_next_token(now - self._last_token_time)
            self._last_token_time = now
        if delta.finished:
            observer.on_finished(now - self.arrival)


class AsyncEngine:
    def __init__(self, engine: Engine, observer: LatencyObserver | None = None) -> None:
        self.engine = engine
        self.observer = observer
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future | None]] = (
            queue.SimpleQueue()
        )
        self._wake = threading.Event()
        self._streams: dict[str, RequestStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stop_reason = "the engine has stopped"
        self.finished_counts: Counter[str] = Counter()  # requests by finish reason: "stop", "length", "abort", "error"

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncEngine:
        return cls(Engine(config))

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def start(self) -> None:
        """Start the loop thread, bound to the running event loop (called lazily by every async method)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="mistralpy-engine", daemon=True)
        self._thread.start()

    async def shutdown(self, reason: str = "the engine has stopped") -> None:
        """Stop the loop thread; every open stream ends with EngineDeadError(reason)."""
        if self._thread is None or self._stopping:
            return
        self._stop_reason = reason
        self._stopping = True
        self._wake.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def call(self, fn: Callable[[Engine], T]) -> T:
        """Run fn(engine) on the loop thread, between steps, and return its result."""
        self.start()
        if self._stopping:
            raise EngineDeadError(self._stop_reason)
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((lambda: fn(self.engine), future))
        self._wake.set()
        return await asyncio.wrap_future(future)

    async def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        prompt_token_ids: list[int] | None = None,
        cache_salt: str | None = None,
        grammar: llguidance.LLMatcher | None = None,
        lora_request: LoRARequest | None = None,
        images: list | None = None,
    ) -> RequestStream:
        """Admit a request (validation errors are raised here, before any output) and return its stream.
        `prompt_token_ids`, `cache_salt`, `grammar`, `lora_request`, `images`: see Engine.add_request."""

        def add(engine: Engine) -> RequestStream:
            args = (prompt_token_ids, cache_salt, grammar, lora_request)
            kwargs = {} if images is None else {"images": images}  # a keyword only where given: the old call stays
            rid = engine.add_request(prompt, params, request_id, *args, **kwargs)
            stream = RequestStream(rid, self)
            self._streams[rid] = stream
            return stream

        try:
            return await self.call(add)
        except asyncio.CancelledError:
            if request_id is not None:  # the add may still run after we stop waiting for it
                self.abort(request_id)
            raise

    async def add_embed_requests(
        self, prompts: list[list[int]], request_ids: list[str], dimensions: int | None = None
    ) -> list[RequestStream]:
        """Admit embedding requests (token ids; see Engine.add_embed_request) all at once, so that they share a step;
        each stream yields one EmbeddingRequestOutput. One refused input admits none of them."""

        def add(engine: Engine) -> list[RequestStream]:
            streams = []
            try:
                for prompt, rid in zip(prompts, request_ids, strict=True):
                    streams.append(RequestStream(engine.add_embed_request(prompt, dimensions, rid), self))
                    self._streams[rid] = streams[-1]
            except BaseException:
                for stream in streams:
                    self._abort(stream.request_id)
                raise
            return streams

        try:
            return await self.call(add)
        except asyncio.CancelledError:  # the add may still run after we stop waiting for it
            for rid in request_ids:
                self.abort(rid)
            raise

    async def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Yield delta outputs until the request finishes; closing or cancelling the iterator aborts it."""
        stream = await self.add_request(prompt, params, request_id)
        try:
            async for out in stream:
                yield out
        finally:
            stream.abort()

    def abort(self, request_id: str) -> None:
        """Abort without waiting: the loop thread frees the request's blocks before its next step."""
        if self._thread is None or self._stopping:
            return
        self._commands.put((lambda: self._abort(request_id), None))
        self._wake.set()

    def _abort(self, request_id: str) -> None:
        if self._streams.pop(request_id, None) is not None:
            self.engine.abort_request(request_id)
            self.finished_counts["abort"] += 1

    def _run(self) -> None:
        busy = False
        while not self._stopping:
            self._drain_commands()
            if not self.engine.has_unfinished_requests():
                if busy:  # a burst's freed buffers go back to the system, not kept resident while idle
                    trim_heap()
                    busy = False
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step(delta=True)
                busy = True
            except Exception as e:  # the engine's state is unknown now: fail its requests, keep serving new ones
                logger.exception("engine step failed")
                self._fail_all(e)
                continue
            for out in outputs:
                self._dispatch(out)
        self._drain_commands()
        self._fail_all(EngineDeadError(self._stop_reason))

    def _drain_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future is not None and not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as e:
                if future is None:
                    logger.exception("engine command failed")
                else:
                    future.set_exception(e)
                continue
            if future is not None:
                future.set_result(result)

    def _dispatch(self, out: RequestOutput) -> None:
        stream = self._streams.get(out.request_id)
        if stream is None:
            return
        generated = isinstance(out, RequestOutput)  # else an EmbeddingRequestOutput, made whole in one step
        failed = next((o for o in out.outputs if o.finish_reason == "error"), None) if generated else None
        if failed is not None:  # the request fails alone (its other samples too); the batch went on
            del self._streams[out.request_id]
            self.engine.abort_request(out.request_id)
            self.finished_counts["error"] += 1
            self._put(stream, GenerationError(failed.error or "generation failed"))
            return
        if out.finished:
            del self._streams[out.request_id]
            self.finished_counts[(out.outputs[0].finish_reason if generated else "stop") or "abort"] += 1
        if self.observer is not None and generated:
            stream._observe(out, self.observer)
        self._put(stream, out)

    def _fail_all(self, error: BaseException) -> None:
        for rid, stream in list(self._streams.items()):
            try:
                self.engine.abort_request(rid)
            except Exception:
                logger.exception("abort of request %s failed", rid)
            self._put(stream, error)
        self._streams.clear()

    def _put(self, stream: RequestStream, item: RequestOutput | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(stream._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass
