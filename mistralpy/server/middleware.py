"""Pure ASGI middlewares (BaseHTTPMiddleware would break streaming cancellation): request ids + access log,
a request-body size limit, and 503 while the model is still loading."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

access_log = logging.getLogger("mistralpy.access")
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


class RequestIdMiddleware:
    """Echo the client's X-Request-Id (or make one) on the response, and log one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        request_id = given[:128] or uuid.uuid4().hex.encode()
        start, status = time.monotonic(), [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %d %.1fms id=%s', client[0], scope["method"], scope["path"], status[0],
                (time.monotonic() - start) * 1000, request_id.decode(errors="replace"),
            )  # fmt: skip


class BodyLimitMiddleware:
    """Reject request bodies over max_bytes with 413, whether or not Content-Length announces them."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        # Read the whole body (bounded), then replay it; later receive() calls see disconnects as usual.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = f"{self.max_bytes / 1024 / 1024:g} MiB"
        await error_response(413, f"the request body is larger than the limit of {limit}", code="request_too_large")(
            scope, receive, send
        )


class ReadinessMiddleware:
    """Until the engine is loaded, every route (/health included) answers 503 with an OpenAI error body."""

    def __init__(self, app: ASGIApp, is_ready: Callable[[], bool]) -> None:
        self.app = app
        self.is_ready = is_ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_ready():
            await self.app(scope, receive, send)
            return
        response = error_response(503, "the model is still loading; retry shortly", code="model_loading")
        response.headers["Retry-After"] = "1"
        await response(scope, receive, send)
