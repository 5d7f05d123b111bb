"""Ingress: the HTTP endpoint in front of the engine replicas (Ray Serve's proxy hands it every request). It reads the
body (within the server's limit), keys the prompt's prefix, and streams the chosen replica's response back as it
comes: the OpenAI routes, their errors and SSE streams unchanged. A client that leaves cancels the replica's
response, which aborts the request there. A replica that dies before it answers has sent nothing: the request goes
to another one; one that dies mid-stream ends the stream with an error event."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..server.limits import RequestLimits
from .forwarded import ForwardedRequest, prefix_key

logger = logging.getLogger(__name__)
REPLICA_GONE = (RayActorError, ActorDiedError, ActorUnavailableError)
ATTEMPTS = 4  # a dead replica leaves the router's set within a moment; the pause grows between tries
RETRY_PAUSE_S = 0.5
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
        answer = await self._answer(forwarded)
        if isinstance(answer, Response):
            return answer
        stream, status, headers = answer
        content_type = dict(headers).get("content-type", "application/octet-stream")
        kept = {k: v for k, v in headers if k not in ("content-length", "content-type", "transfer-encoding")}
        sse = content_type.startswith("text/event-stream")
        return StreamingResponse(_rest(stream, sse), status_code=status, headers=kept, media_type=content_type)

    async def _answer(self, forwarded: ForwardedRequest) -> tuple[Any, int, list[tuple[str, str]]] | Response:
        """The stream of a replica that answered (with its status and headers), or the error response."""
        for attempt in range(ATTEMPTS):
            stream = self.engine.options(stream=True).forward.remote(forwarded)
            try:
                status, headers = await stream.__anext__()
                return stream, status, headers
            except StopAsyncIteration:
                return _error(502, "the engine replica sent no response")
            except REPLICA_GONE as e:  # nothing was sent to the client yet: the request goes to another replica
                logger.warning("an engine replica went away before it answered (%s); retrying", type(e).__name__)
                await asyncio.sleep(RETRY_PAUSE_S * (attempt + 1))
        return _error(503, f"no engine replica answered in {ATTEMPTS} attempts")


async def _rest(stream: Any, sse: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    except REPLICA_GONE as e:  # mid-stream: the client has part of an answer, so it gets an error event, not a retry
        logger.warning("an engine replica went away while streaming (%s)", type(e).__name__)
        if sse:
            error = {"message": "the engine replica serving this stream went away", "type": "server_error",
                     "param": None, "code": "replica_failed"}  # fmt: skip
            yield f"data: {json.dumps({'error': error})}\n\n".encode()
    finally:
        stream.cancel()  # a no-op once it has ended; else the replica's generator is closed: the request aborts


def _error(status: int, message: str) -> JSONResponse:
    code = {413: "request_too_large", 502: "bad_gateway", 503: "replicas_unavailable"}[status]
    return JSONResponse({"error": {"message": message, "type": "server_error", "param": None, "code": code}}, status)
