"""The HTTP edge of the generation routes: JSON bodies, SSE framing, client disconnects.

The request -> response logic lives in serving_chat.py / serving_completion.py and knows no HTTP. Here a request is
aborted (its KV blocks freed) whenever its HTTP exchange ends early: the SSE response aborts its streams however it
ends, and a non-streaming request is cancelled as soon as the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import MistralpyError
from .errors import APIError, ClientDisconnected, error_body, status_of
from .model_registry import ModelRegistry
from .protocol import ChatCompletionRequest, CompletionRequest
from .serving_chat import chat_completion
from .serving_completion import completion
from .streaming import ChunkStream
from .validation import NOT_A_JSON_OBJECT, describe_validation_errors

logger = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
DONE = "data: [DONE]\n\n"


async def create_chat_completion(models: ModelRegistry, raw: Request) -> Response:
    """POST /v1/chat/completions: JSON, or OpenAI's SSE chunks when stream is true."""
    body = await parse_body(raw, ChatCompletionRequest)
    ctx = await models.context(body.model)
    return respond(await until_disconnect(raw, chat_completion(ctx, body)), body.include_usage)


async def create_completion(models: ModelRegistry, raw: Request) -> Response:
    """POST /v1/completions: JSON, or OpenAI's SSE chunks when stream is true."""
    body = await parse_body(raw, CompletionRequest)
    ctx = await models.context(body.model)
    return respond(await until_disconnect(raw, completion(ctx, body)), body.include_usage)


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`; 400 with a readable message otherwise. As in FastAPI, a body sent with
    a non-JSON Content-Type is refused (browsers send text/plain across origins without asking first)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    body = await request.body()
    if not body.strip() or content_type not in ("", "application/json") and not content_type.endswith("+json"):
        raise APIError(400, NOT_A_JSON_OBJECT)
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        message, param = describe_validation_errors(e.errors(include_url=False))
        raise APIError(400, message, param) from None


def respond(result: BaseModel | ChunkStream[Any], include_usage: bool) -> Response:
    if isinstance(result, ChunkStream):
        return SSEResponse(sse_events(result, include_usage), on_close=result.abort)
    return JSONResponse(result.model_dump())


async def sse_events(chunks: ChunkStream[Any], include_usage: bool) -> AsyncIterator[str]:
    """Each chunk as an SSE event; an error after the 200 header went out becomes an error event; then [DONE]."""
    try:
        async for chunk in chunks:
            yield sse(chunk, with_usage=include_usage)
    except Exception as e:
        yield sse_error(e)
    finally:
        chunks.abort()
    yield DONE


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
            await asyncio.wait({task})  # let the cancellation run: it aborts the requests
    if task.cancelled():
        raise ClientDisconnected("the client disconnected")
    return task.result()


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def sse(payload: BaseModel | dict[str, Any], with_usage: bool = True) -> str:
    """One SSE event. Without `with_usage` the `usage` key is left out (OpenAI writes it only when asked)."""
    data = payload.model_dump() if isinstance(payload, BaseModel) else payload
    if not with_usage:
        data.pop("usage", None)
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_error(error: Exception) -> str:
    """An error after the 200 header went out: sent as an SSE event with an OpenAI error body."""
    status, message = status_of(error)
    if status == 500 and not isinstance(error, MistralpyError):
        logger.error("generation failed", exc_info=error)
    return sse(error_body(status, message))


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
