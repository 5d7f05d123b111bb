"""Pure ASGI middlewares (BaseHTTPMiddleware would break streaming cancellation): request ids + access log,
503 while the model is still loading, and the request-body size limit. An answer given before the body is read
(401, 503, 413) never reads it."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .limits import RequestLimits

access_log = logging.getLogger("mistralpy.access")
# An answer given before the body is read keeps the connection open (the server then reads and drops the body) only
# for a body up to this size, as Go's net/http does; a larger or unannounced one closes the connection instead.
MAX_UNREAD_BODY_BYTES = 256 * 1024
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer: logged, never delivered


class RequestIdMiddleware:
    """Echo the client's X-Request-Id (or make one) on the response, and log one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id") or b""
        request_id = given[:128] or uuid.uuid4().hex.encode()
        start, status = time.monotonic(), [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, send_with_id)
            failed = False
        finally:
            # No answer at all: the app failed (500), or the client left before there was anything to answer.
            code = status[0] or (500 if failed else CLIENT_CLOSED_REQUEST)
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %d %.1fms id=%s', client[0], scope["method"], scope["path"], code,
                (time.monotonic() - start) * 1000, request_id.decode(errors="replace"),
            )  # fmt: skip


class BodyLimitMiddleware:
    """Read the whole body before the app runs, rejecting one over max_body_bytes with 413 (whether or not
    Content-Length announces it). A client that hangs up mid-body gets no answer: there is nobody to answer."""

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app = app
        self.max_bytes = limits.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(f"has {int(length)} bytes", scope, receive, send)
            return
        # Read the whole body (bounded), then replay it; later receive() calls see disconnects as usual.
        messages, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(f"has more than {self.max_bytes} bytes", scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, what: str, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body {what}; the limit is {self.max_bytes} (max_body_bytes)"
        response = error_response(413, message, code="request_too_large", path=scope["path"])
        await answer_before_body(response, scope, receive, send)


class ReadinessMiddleware:
    """Until the engine is loaded, every route (/health included) answers 503 with an OpenAI error body; but those
    `needs_engine` says can do without it (the chat page's files)."""

    def __init__(
        self, app: ASGIApp, is_ready: Callable[[], bool], needs_engine: Callable[[str], bool] = lambda _: True
    ) -> None:
        self.app = app
        self.is_ready = is_ready
        self.needs_engine = needs_engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_ready() or not self.needs_engine(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        message = "the model is still loading; retry shortly"
        response = error_response(503, message, code="model_loading", path=scope["path"])
        response.headers["Retry-After"] = "1"
        await answer_before_body(response, scope, receive, send)


async def answer_before_body(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Send `response` without reading the request's body; close the connection after it if the unread body is
    large or of unknown size, so that the server never reads it."""
    length = _header(scope, b"content-length")
    chunked = _header(scope, b"transfer-encoding") is not None
    if chunked or length is not None and (not length.isdigit() or int(length) > MAX_UNREAD_BODY_BYTES):
        response.headers["Connection"] = "close"
    await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers", ()) if key == name), None)
