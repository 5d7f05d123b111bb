"""GET /ui/: the chat page's static files (shipped in the package, no build step), with headers that keep model
output from running as code in it even if it got past the page's sanitiser."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/ui"
# Scripts and styles only from the page's own files; no inline script, no frames, no requests elsewhere (an image
# in model output cannot carry the conversation off to another host).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidated: an upgraded package's page is seen at once
]


def is_ui_path(path: str) -> bool:
    """The page's files need neither the API key (a browser cannot send one when it opens a page) nor the model."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def ui_routes() -> list[BaseRoute]:
    async def to_index(_: object) -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=308)

    return [
        Route(PREFIX, to_index, methods=["GET", "HEAD"]),
        Mount(PREFIX, app=_SecurityHeaders(StaticFiles(directory=STATIC_DIR, html=True)), name="ui"),
    ]


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def page_url(host: str, port: int) -> str:
    """The page's address as a browser on this machine reaches it (a wildcard bind is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{PREFIX}/"
