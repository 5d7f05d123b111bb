"""`mistralpy serve`: load the model, then run the OpenAI-compatible server under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from ..cli_args import engine_options
from ..lora.anymoe.cli import add_anymoe_args, anymoe_options
from ..lora.cli import add_lora_args, lora_modules, lora_options, runtime_updates
from ..lora.xlora.cli import add_xlora_args, xlora_modules, xlora_options
from .limits import RequestLimits

if TYPE_CHECKING:
    from ..config import EngineConfig
    from ..mcp_client.toolbox import McpToolbox

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


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from ..config import EngineConfig
    from ..engine.async_engine import AsyncEngine
    from ..errors import InvalidRequestError
    from .app import create_app
    from .context import ServerContext
    from .model_registry import ModelRegistry, ModelSlot
    from .served_models import ServedModel, served_models
    from .shutdown import ShutdownServer
    from .ui.routes import page_url

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.port <= 65535:
        raise InvalidRequestError(f"--port must be in [0, 65535], got {args.port}")
    if not 0 <= args.shutdown_timeout < float("inf"):
        raise InvalidRequestError(f"--shutdown-timeout must be a number of seconds >= 0, got {args.shutdown_timeout}")
    limits = RequestLimits(max_body_bytes=args.max_body_bytes, max_request_tokens=args.max_request_tokens)
    base = EngineConfig(
        model=None,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        show_progress=sys.stderr.isatty(),
        task=args.task,
        pooling=args.pooling,
        generation_config=args.generation_config,
        **engine_options(args),
        **lora_options(args),
        **xlora_options(args),
        **anymoe_options(args),
    )
    adapters = {**lora_modules(args, ""), **xlora_modules(args, "")}
    served, default = served_models(args, base, adapters)
    paths = {m.name: check_model(m.config) for m in served}
    origins = [o.strip() for o in args.cors_allowed_origins.split(",") if o.strip()]
    failure: list[BaseException] = []
    where = f"http://{args.host}:{args.port}/v1"

    def slot(model: ServedModel) -> ModelSlot:
        def load() -> AsyncEngine:
            engine = AsyncEngine.from_config(model.config)
            for adapter in model.lora_modules.values():  # each read and checked against the model before serving
                engine.engine.lora.read(adapter)
            print(
                f"mistralpy: serving {paths[model.name]} as '{model.name}' on {where} (context {engine.max_model_len})",
                file=sys.stderr,
                flush=True,
            )
            return engine

        ctx = ServerContext(None, model.name, limits=limits, lora_modules=model.lora_modules)
        ctx.lora_runtime_updates = runtime_updates(args)
        ctx.trust_request_chat_template = args.trust_request_chat_template
        return ModelSlot(ctx, load, paths[model.name])

    def new_model(name: str, settings: dict) -> ModelSlot:  # POST /v1/models/load of a model new to the server
        kv = settings.pop("kv_cache_tokens", base.kv_cache_tokens // len(served))
        fields = {"quantization" if k == "isq" else k: v for k, v in settings.items()}
        model = ServedModel(name, dataclasses.replace(base, kv_cache_tokens=kv, enable_lora=False, **fields), {})
        paths[name] = check_model(model.config)
        return slot(model)

    def on_load_error(error: BaseException) -> None:
        failure.append(error)
        server.should_exit = True

    models = ModelRegistry([slot(m) for m in served], default)
    models.factory = new_model
    app = create_app(
        models, api_key=args.api_key or None, cors_allowed_origins=origins, limits=limits,
        on_load_error=on_load_error, model_runtime_updates=args.allow_runtime_model_updating, mcp=mcp_toolbox(args),
        ui=args.ui,
    )  # fmt: skip

    async def stop_requests() -> None:
        await app.state.models.shutdown(SHUTTING_DOWN)

    loading = ", ".join(paths.values())
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
    server.run()
    if failure:
        print(f"mistralpy: error: {failure[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


def mcp_toolbox(args: argparse.Namespace) -> McpToolbox | None:
    """--mcp-config read and checked before anything loads; the servers are connected at startup."""
    if args.mcp_config is None:
        return None
    from ..errors import InvalidRequestError
    from ..mcp_client.config import read_mcp_config
    from ..mcp_client.toolbox import McpToolbox

    config = read_mcp_config(args.mcp_config)
    try:
        import mcp  # noqa: F401 - the optional extra, checked before the server starts
    except ImportError:
        raise InvalidRequestError("--mcp-config needs the MCP SDK: pip install 'mistralpy[mcp]'") from None
    return McpToolbox(config)


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
