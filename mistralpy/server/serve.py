"""`mistralpy serve`: load the model, then run the OpenAI-compatible server under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

API_KEY_ENV = "MISTRALPY_API_KEY"
GRACEFUL_SHUTDOWN_S = 5  # open streams get this long to finish before they are cut


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1234, help="port to listen on (default 1234)")
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_ENV})",
    )
    p.add_argument("--served-model-name", default="default", help="the model name clients send (default 'default')")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences batched together at most (default 64)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from ..config import EngineConfig
    from ..engine.async_engine import AsyncEngine
    from .app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.port <= 65535:
        from ..errors import InvalidRequestError

        raise InvalidRequestError(f"--port must be in [0, 65535], got {args.port}")
    config = EngineConfig(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        show_progress=sys.stderr.isatty(),
    )
    engine = AsyncEngine.from_config(config)
    app = create_app(engine, args.served_model_name, args.api_key or None)
    print(
        f"mistralpy: serving {engine.engine.model_path} as '{args.served_model_name}' "
        f"on http://{args.host}:{args.port}/v1 (context {engine.max_model_len})",
        file=sys.stderr,
        flush=True,
    )
    # On SIGINT/SIGTERM uvicorn stops accepting, lets open requests finish (for GRACEFUL_SHUTDOWN_S at most) and runs
    # the lifespan shutdown, which stops the engine thread. Then it re-sends the signal to the handler installed
    # before it started: this one, so that an asked-for shutdown exits 0 rather than dying by the signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
