"""Engine plumbing shared by the generation services: admitting requests, merging streams, collecting results.

Nothing here knows HTTP: the HTTP routes (http_edge.py) and the in-process Runner both build on it. A request is
aborted (its KV blocks freed) however its consumer stops: a finished or failed collect, a closed ChunkStream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from ..engine.async_engine import AsyncEngine, RequestStream
from ..outputs import Logprob, RequestOutput
from ..sampling_params import SamplingParams
from .prompt_tokens import TokenizedPrompt

if TYPE_CHECKING:
    import llguidance

    from ..lora.request import LoRARequest

T = TypeVar("T")


async def add_streams(
    engine: AsyncEngine,
    prompts: list[TokenizedPrompt],
    params: SamplingParams,
    request_id: str,
    cache_salt: str | None = None,
    grammar: llguidance.LLMatcher | None = None,
    lora_request: LoRARequest | None = None,
) -> list[RequestStream]:
    """Admit every prompt, or none: if one is rejected the ones already admitted are aborted. The engine gets
    token ids only (see prompt_tokens.py) and each text prompt's text; `grammar`, the compiled constraint
    (structured_compile.py)."""
    streams: list[RequestStream] = []
    try:
        for i, prompt in enumerate(prompts):
            rid = request_id if len(prompts) == 1 else f"{request_id}-{i}"
            text_or_ids = prompt.text if prompt.text is not None else prompt.ids
            stream = await engine.add_request(
                text_or_ids, params, rid, prompt.ids, cache_salt, grammar, lora_request, prompt.images
            )
            streams.append(stream)
    except BaseException:
        abort_all(streams)
        raise
    return streams


def abort_all(streams: list[RequestStream]) -> None:
    for stream in streams:
        stream.abort()


class ChunkStream(Generic[T]):
    """The response chunks of one streamed request. `abort()` (safe to call at any time, from the event loop's
    thread) stops generation and frees the KV blocks; `aclose()` also finishes the chunk generator."""

    def __init__(
        self, chunks: AsyncIterator[T], streams: list[RequestStream], num_prompt_tokens: int | None = None
    ) -> None:
        self._chunks = chunks
        self._streams = streams
        self.num_prompt_tokens = num_prompt_tokens  # known before the first chunk (a chat's one prompt)

    def __aiter__(self) -> ChunkStream[T]:
        return self

    async def __anext__(self) -> T:
        return await self._chunks.__anext__()

    def abort(self) -> None:
        abort_all(self._streams)

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self.abort()


async def merge(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, delta output) from all streams, in arrival order."""
    if len(streams) == 1:
        async for out in streams[0]:
            yield 0, out
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, stream: RequestStream) -> None:
        try:
            async for out in stream:
                queue.put_nowait((i, out))
            queue.put_nowait((i, None))
        except Exception as e:
            queue.put_nowait((i, e))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        abort_all(streams)


@dataclass
class Choice:
    """One generated sequence, accumulated from its deltas."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None  # the stop string or token id that ended it


@dataclass
class Collected:
    """Everything one prompt produced: its n choices, its prompt ids and (when asked for) prompt logprobs."""

    n: int
    prompt: str | None = None
    prompt_token_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    num_cached_tokens: int = 0
    choices: list[Choice] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.choices = [Choice() for _ in range(self.n)]

    def add(self, out: RequestOutput) -> None:
        self.prompt, self.prompt_token_ids = out.prompt, out.prompt_token_ids
        self.num_cached_tokens = out.num_cached_tokens
        if out.prompt_logprobs is not None:
            self.prompt_logprobs = out.prompt_logprobs
        for c in out.outputs:
            choice = self.choices[c.index]
            choice.text += c.text
            choice.token_ids += c.token_ids
            choice.logprobs += c.logprobs or []
            choice.finish_reason = c.finish_reason or choice.finish_reason
            choice.stop_reason = c.stop_reason if c.finish_reason else choice.stop_reason


async def collect(streams: list[RequestStream], n: int) -> list[Collected]:
    """Every prompt's full result; the requests are aborted however this ends (finished, failed, cancelled)."""
    results = [Collected(n) for _ in streams]
    try:
        async for i, out in merge(streams):
            results[i].add(out)
    finally:
        abort_all(streams)
    return results
