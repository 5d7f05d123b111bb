"""`mistralpy serve`: load the model, then run the OpenAI-compatible server under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from ..cli_args import engine_options
from ..lora.cli import add_lora_args, lora_modules, lora_options, runtime_updates
from ..multimodal.cli import add_image_args, image_limits
from .limits import RequestLimits

if TYPE_CHECKING:
    from ..config import EngineConfig

API_KEY_ENV = "MISTRALPY_API_KEY"
SHUTTING_DOWN = "the server is shutting down"


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1234, help="port to listen on (default 1234)")
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_ENV}; prefer "
        "the variable: a command line is visible to other users in ps)",
    )
    p.add_argument("--served-model-name", default="default", help="the model name clients send (default 'default')")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences batched together at most (default 64)")
    p.add_argument(
        "--task", default=None, choices=["generate", "embed"],
        help="generate text, or serve /v1/embeddings (default: embed for an encoder model, else generate; embed "
        "without -m serves the embedded all-MiniLM-L6-v2)",
    )  # fmt: skip
    p.add_argument(
        "--generation-config", default="auto",
        help="sampling defaults for the fields a request leaves unset: auto (the model folder's "
        "generation_config.json), vllm (none), or a generation_config.json file or folder (default auto)",
    )  # fmt: skip
    p.add_argument(
        "--pooling", default=None, choices=["mean", "cls", "last"],
        help="how --task embed pools a prompt's hidden states (default: a sentence-transformers folder's own, "
        "else cls for an encoder, last for a decoder)",
    )  # fmt: skip
    p.add_argument(
        "--cors-allowed-origins",
        default="",
        help="comma-separated origins allowed by CORS, e.g. 'http://localhost:3000' or '*' (default: none)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=RequestLimits.max_body_bytes,
        help=f"largest request body; larger ones get 413 (default {RequestLimits.max_body_bytes})",
    )
    p.add_argument(
        "--max-request-tokens",
        type=int,
        default=RequestLimits.max_request_tokens,
        help="most prompt tokens x n (summed over its prompts) one request may enqueue; more is a 400 "
        f"(default {RequestLimits.max_request_tokens})",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=0.0,
        help="seconds open requests may take to finish after SIGINT/SIGTERM; then they end with an error "
        "(default 0: at once, as vLLM)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_lora_args(p)
    add_image_args(p)


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from ..config import EngineConfig
    from ..engine.async_engine import AsyncEngine
    from ..errors import InvalidRequestError
    from .app import create_app
    from .shutdown import ShutdownServer

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.port <= 65535:
        raise InvalidRequestError(f"--port must be in [0, 65535], got {args.port}")
    if not 0 <= args.shutdown_timeout < float("inf"):
        raise InvalidRequestError(f"--shutdown-timeout must be a number of seconds >= 0, got {args.shutdown_timeout}")
    limits = RequestLimits(max_body_bytes=args.max_body_bytes, max_request_tokens=args.max_request_tokens)
    images = image_limits(args)  # checked before the model loads
    config = EngineConfig(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        show_progress=sys.stderr.isatty(),
        task=args.task,
        pooling=args.pooling,
        generation_config=args.generation_config,
        **engine_options(args),
        **lora_options(args),
    )
    adapters = lora_modules(args, args.served_model_name)
    model_path = check_model(config)
    origins = [o.strip() for o in args.cors_allowed_origins.split(",") if o.strip()]
    failure: list[BaseException] = []

    def load() -> AsyncEngine:
        engine = AsyncEngine.from_config(config)
        engine.engine.images.limits = images
        for adapter in adapters.values():  # each read and checked against the model before the server is ready
            engine.engine.lora.read(adapter)
        print(
            f"mistralpy: serving {model_path} as '{args.served_model_name}' on http://{args.host}:{args.port}/v1 "
            f"(context {engine.max_model_len})",
            file=sys.stderr,
            flush=True,
        )
        return engine

    def on_load_error(error: BaseException) -> None:
        failure.append(error)
        server.should_exit = True

    app = create_app(
        load, args.served_model_name, args.api_key or None, origins, limits, on_load_error,
        lora_modules=adapters, lora_runtime_updates=runtime_updates(args), allow_image_urls=args.allow_image_urls,
    )  # fmt: skip

    async def stop_requests() -> None:
        engine = app.state.context.engine
        if engine is not None:
            await engine.shutdown(SHUTTING_DOWN)

    print(f"mistralpy: loading {model_path} (/health answers 503 until it is ready)", file=sys.stderr, flush=True)
    http_config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # mistralpy.access logs one line per request, with its X-Request-Id
    )
    server = ShutdownServer(http_config, stop_requests, args.shutdown_timeout)
    # On SIGINT/SIGTERM uvicorn stops accepting, open requests get --shutdown-timeout seconds, then the engine stops
    # and they end with an error; the lifespan shutdown runs. Then uvicorn re-sends the signal to the handler
    # installed before it started: this one, so that an asked-for shutdown exits 0 rather than dying by the signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    server.run()
    if failure:
        print(f"mistralpy: error: {failure[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


def check_model(config: EngineConfig) -> str:
    """Fail before the server starts on what is cheap to check: the path, the file format, the architecture."""
    from ..embed.default_model import default_embedding_model_path
    from ..loader import GGMLParams, open_model_source
    from ..loader.default_model import default_model_path
    from ..models import resolve_model_class

    path = config.model or (default_embedding_model_path() if config.task == "embed" else default_model_path())
    resolve_model_class(open_model_source(path, GGMLParams.from_engine_config(config)).model_config())
    return path


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
