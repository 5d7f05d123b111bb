"""Plumbing shared by the generation routes: admitting requests, merging streams, SSE, client disconnects.

A request is aborted (its KV blocks freed) whenever its HTTP exchange ends early: the SSE response aborts its
streams however it ends, and a non-streaming request is cancelled as soon as the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..engine.async_engine import AsyncEngine, EngineDeadError, RequestStream
from ..errors import MistralpyError
from ..outputs import Logprob, RequestOutput
from ..sampling_params import SamplingParams
from .errors import ClientDisconnected, error_body

logger = logging.getLogger(__name__)
T = TypeVar("T")
DONE = "data: [DONE]\n\n"


async def add_streams(
    engine: AsyncEngine, prompts: list[str | list[int]], params: SamplingParams, request_id: str
) -> list[RequestStream]:
    """Admit every prompt, or none: if one is rejected the ones already admitted are aborted."""
    streams: list[RequestStream] = []
    try:
        for i, prompt in enumerate(prompts):
            rid = request_id if len(prompts) == 1 else f"{request_id}-{i}"
            streams.append(await engine.add_request(prompt, params, rid))
    except BaseException:
        abort_all(streams)
        raise
    return streams


def abort_all(streams: list[RequestStream]) -> None:
    for stream in streams:
        stream.abort()


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


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (which aborts its requests) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ClientDisconnected("the client disconnected")
    return task.result()


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass
class Choice:
    """One generated sequence, accumulated from its deltas."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Collected:
    """Everything one prompt produced: its n choices, its prompt ids and (when asked for) prompt logprobs."""

    n: int
    prompt: str | None = None
    prompt_token_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    choices: list[Choice] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.choices = [Choice() for _ in range(self.n)]

    def add(self, out: RequestOutput) -> None:
        self.prompt, self.prompt_token_ids = out.prompt, out.prompt_token_ids
        if out.prompt_logprobs is not None:
            self.prompt_logprobs = out.prompt_logprobs
        for c in out.outputs:
            choice = self.choices[c.index]
            choice.text += c.text
            choice.token_ids += c.token_ids
            choice.logprobs += c.logprobs or []
            choice.finish_reason = c.finish_reason or choice.finish_reason


async def collect(streams: list[RequestStream], n: int) -> list[Collected]:
    results = [Collected(n) for _ in streams]
    async for i, out in merge(streams):
        results[i].add(out)
    return results


def sse(payload: BaseModel | dict[str, Any], with_usage: bool = True) -> str:
    """One SSE event. Without `with_usage` the `usage` key is left out (OpenAI writes it only when asked)."""
    data = payload.model_dump() if isinstance(payload, BaseModel) else payload
    if not with_usage:
        data.pop("usage", None)
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_error(error: Exception) -> str:
    """An error after the 200 header went out: sent as an SSE event with an OpenAI error body."""
    if isinstance(error, EngineDeadError):
        return sse(error_body(503, str(error)))
    if isinstance(error, MistralpyError):
        return sse(error_body(400, str(error)))
    logger.error("generation failed", exc_info=error)
    return sse(error_body(500, "internal server error; see the server log"))


class SSEResponse(StreamingResponse):
    """text/event-stream whose `on_close` runs however the exchange ends (finished, failed, client gone)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            # Only uvicorn cancels this task from outside: its graceful-shutdown timeout ran out with the stream
            # still open. End the stream properly, with an error event, rather than logging a traceback.
            self._on_close()
            with contextlib.suppress(Exception):
                end = sse(error_body(503, "the server is shutting down")) + DONE
                await send({"type": "http.response.body", "body": end.encode(), "more_body": False})
        finally:
            self._on_close()
