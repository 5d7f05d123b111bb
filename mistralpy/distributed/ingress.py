"""Ingress: the HTTP endpoint in front of the engine replicas (Ray Serve's proxy hands it every request). It reads the
body (within the server's limit), keys the prompt's prefix, and streams the chosen replica's response back as it
comes: the OpenAI routes, their errors and SSE streams unchanged. A client that leaves cancels the replica's
response, which aborts the request there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..server.limits import RequestLimits
from .forwarded import ForwardedRequest, prefix_key

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


class Ingress:
    def __init__(self, engine: Any, max_body_bytes: int = RequestLimits.max_body_bytes) -> None:
        self.engine = engine  # the engine replicas' DeploymentHandle
        self.max_body_bytes = max_body_bytes

    def __serve_build_asgi_app__(self) -> Starlette:  # Ray Serve builds the app on each ingress replica
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=METHODS)])

    async def handle(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                return _error(413, f"the request body is over {self.max_body_bytes} bytes")
        forwarded = ForwardedRequest(
            request.method, request.url.path, request.url.query.encode(), list(request.scope["headers"]), body,
            prefix_key(body) if request.method == "POST" else None,
        )  # fmt: skip
        stream = self.engine.options(stream=True).forward.remote(forwarded)
        try:
            status, headers = await stream.__anext__()
        except StopAsyncIteration:
            return _error(502, "the engine replica sent no response")
        content_type = dict(headers).get("content-type", "application/octet-stream")
        kept = {k: v for k, v in headers if k not in ("content-length", "content-type", "transfer-encoding")}
        return StreamingResponse(_rest(stream), status_code=status, headers=kept, media_type=content_type)


async def _rest(stream: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        stream.cancel()  # a no-op once it has ended; else the replica's generator is closed: the request aborts


def _error(status: int, message: str) -> JSONResponse:
    code = {413: "request_too_large", 502: "bad_gateway"}[status]
    return JSONResponse({"error": {"message": message, "type": "server_error", "param": None, "code": code}}, status)
