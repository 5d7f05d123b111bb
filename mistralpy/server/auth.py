"""--api-key: a pure ASGI middleware (no BaseHTTPMiddleware, which breaks streaming cancellation)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response
from .middleware import answer_before_body

OPEN_PATHS = frozenset({"/health"})


class ApiKeyMiddleware:
    """Every HTTP route except /health needs `Authorization: Bearer <key>` (the scheme in any case, RFC 7235) or
    `x-api-key: <key>` (Anthropic's); otherwise 401 with an OpenAI body (Anthropic's on its routes), sent from the
    headers alone: the request's body is never read. `is_public` names more open paths (the chat page's files)."""

    def __init__(self, app: ASGIApp, api_key: str, is_public: Callable[[str], bool] = lambda _: False) -> None:
        self.app = app
        self._expected = api_key.encode()
        self._is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or self._is_public(path) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "missing or incorrect API key", code="invalid_api_key", path=scope["path"])
        response.headers["WWW-Authenticate"] = "Bearer"
        await answer_before_body(response, scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers", ()))
        scheme, _, credential = headers.get(b"authorization", b"").partition(b" ")
        # compare_digest takes as long whatever the credential's content: only its length can show through timing.
        if scheme.lower() == b"bearer" and hmac.compare_digest(credential.lstrip(b" "), self._expected):
            return True
        return hmac.compare_digest(headers.get(b"x-api-key", b""), self._expected)  # Anthropic's clients' header
