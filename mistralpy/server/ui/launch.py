"""`mistralpy ui`: `serve --ui`, then the chat page opened in the browser once the model is ready."""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser

from .routes import PREFIX, page_url

POLL_SECONDS = 0.2


def add_ui_parser(sub: argparse._SubParsersAction) -> None:
    from ...cli_args import add_chat_template_arg, add_model_args
    from ..serve import add_serve_args

    ui = sub.add_parser(
        "ui",
        help="serve the chat page and open it in the browser",
        description="Serve the model with the chat page at /ui/ (as `serve --ui`) and open it in the browser "
        "once the model is loaded.",
    )
    add_model_args(ui, several=True)
    add_chat_template_arg(ui)
    add_serve_args(ui)
    ui.add_argument("--no-browser", action="store_true", help="print the page's address instead of opening it")
    ui.set_defaults(ui=True)


def ui_command(args: argparse.Namespace) -> int:
    from ...errors import InvalidRequestError
    from ..serve import serve_command

    if args.port == 0:
        raise InvalidRequestError("mistralpy ui needs a fixed --port to open the page (0 would pick one at random)")
    args.ui = True
    if not args.no_browser:
        url = page_url(args.host, args.port)
        threading.Thread(target=open_when_ready, args=(url,), name="open-browser", daemon=True).start()
    return serve_command(args)


def open_when_ready(url: str) -> None:
    """Wait for /health to answer 200 (the model is loaded), then open the page; say where it is if no browser."""
    health = url.removesuffix(PREFIX + "/") + "/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a loopback address: never via a proxy
    while not _healthy(opener, health):
        time.sleep(POLL_SECONDS)
    if not webbrowser.open(url):
        print(f"mistralpy: no browser found; open {url} yourself", file=sys.stderr, flush=True)


def _healthy(opener: urllib.request.OpenerDirector, url: str) -> bool:
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
