"""`mistralpy serve`: load the model, then run the OpenAI-compatible server under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from ..distributed.cli import add_replica_args, check_replica_flags
from ..distributed.tensor_parallel.watcher import rank_failure, stop_server_on_worker_death
from ..heap import fixed_mmap_threshold, one_arena
from ..lora.anymoe.cli import add_anymoe_args
from ..lora.cli import add_lora_args
from ..lora.xlora.cli import add_xlora_args
from ..multimodal.cli import add_image_args
from .limits import RequestLimits

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
    p.add_argument(
        "--served-model-name", action="append", default=None,
        help="the model name clients send (default 'default'; with several -m: once a model, in order, default "
        "the files' names)",
    )  # fmt: skip
    p.add_argument(
        "--config", default=None, metavar="MODELS_TOML",
        help="serve the models a TOML (or .json) file lists: [[models]] with name, model, dtype, isq, max_model_len, "
        "kv_cache_tokens or kv_cache_share, chat_template, task, pooling, [models.lora] (docs/MULTI_MODEL.md)",
    )  # fmt: skip
    p.add_argument(
        "--mcp-config", default=None, metavar="SERVERS_JSON",
        help="MCP servers whose tools the model may call, run by this server between rounds: mistral.rs's "
        "{\"servers\": [...]} or Claude Desktop's {\"mcpServers\": {...}} (stdio and streamable HTTP)",
    )  # fmt: skip
    p.add_argument(
        "--trust-request-chat-template", action="store_true",
        help="let a chat request bring its own chat_template (vLLM's flag; the template runs in the sandbox)",
    )  # fmt: skip
    p.add_argument(
        "--allow-runtime-model-updating", action="store_true",
        help="serve POST /v1/models/load and /v1/models/unload (load a model by path, unload one, load it again)",
    )  # fmt: skip
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
    p.add_argument("--ui", action="store_true", help="also serve the chat page at /ui/ (`mistralpy ui` opens it)")
    add_lora_args(p)
    add_xlora_args(p)
    add_anymoe_args(p)
    add_replica_args(p)
    add_image_args(p)


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from ..errors import InvalidRequestError
    from .server_app import server_app
    from .shutdown import ShutdownServer
    from .ui.routes import page_url

    one_arena()  # before the server's threads: the engine thread's freed activations can then be trimmed
    fixed_mmap_threshold()  # large transients (float32 logits and prefill activations) unmapped when freed
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.port <= 65535:
        raise InvalidRequestError(f"--port must be in [0, 65535], got {args.port}")
    if not 0 <= args.shutdown_timeout < float("inf"):
        raise InvalidRequestError(f"--shutdown-timeout must be a number of seconds >= 0, got {args.shutdown_timeout}")
    check_replica_flags(args)
    from ..distributed.tensor_parallel.worker_rank import serve_if_worker_rank

    if serve_if_worker_rank(args):  # torchrun's ranks 1..N-1: a worker of rank 0's engine, until rank 0 stops it
        return 0
    if args.replicas is not None:
        from ..distributed.replicas import serve_replicas

        return serve_replicas(args)
    failure: list[BaseException] = []

    def on_load_error(error: BaseException) -> None:
        failure.append(error)
        server.should_exit = True

    app = server_app(args, on_load_error)

    async def stop_requests() -> None:
        await app.state.models.shutdown(SHUTTING_DOWN)

    loading = ", ".join(slot.path or slot.name for slot in app.state.models.slots.values())
    print(f"mistralpy: loading {loading} (/health answers 503 until it is ready)", file=sys.stderr, flush=True)
    if args.ui:
        print(f"mistralpy: the chat page is at {page_url(args.host, args.port)}", file=sys.stderr, flush=True)
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
    stop_server_on_worker_death()  # a tensor-parallel worker that dies ends this server with its error
    server.run()
    if failure:
        print(f"mistralpy: error: {failure[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    failure = rank_failure()  # the watcher's SIGTERM: a tensor-parallel rank is gone, an error exit
    if failure is not None:
        print(f"mistralpy: error: {failure}", file=sys.stderr, flush=True)
    raise SystemExit(0 if failure is None else 1)
