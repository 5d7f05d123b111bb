"""The app `mistralpy serve` runs, built from its flags: the models (-m / --config) with their settings and
adapters, each loaded on its own engine at startup, the MCP toolbox, the limits. uvicorn runs it (serve.py), and so
does each engine replica behind Ray Serve (distributed/replicas.py)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..cli_args import engine_options
from ..lora.anymoe.cli import anymoe_options
from ..lora.cli import lora_modules, lora_options, runtime_updates
from ..lora.xlora.cli import xlora_modules, xlora_options
from ..multimodal.cli import image_limits
from .limits import RequestLimits

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..config import EngineConfig
    from ..mcp_client.toolbox import McpToolbox


def server_app(args: argparse.Namespace, on_load_error: Callable[[BaseException], None] | None = None) -> Starlette:
    """The app; its models load in the background once its lifespan starts (`app.state.models.ready` then)."""
    from ..engine.async_engine import AsyncEngine
    from .app import create_app
    from .context import ServerContext
    from .model_registry import ModelRegistry, ModelSlot
    from .served_models import ServedModel, served_models

    limits = RequestLimits(max_body_bytes=args.max_body_bytes, max_request_tokens=args.max_request_tokens)
    images = image_limits(args)  # checked before the models load
    base = base_config(args)
    adapters = {**lora_modules(args, ""), **xlora_modules(args, "")}
    served, default = served_models(args, base, adapters)
    paths = {m.name: check_model(m.config) for m in served}
    origins = [o.strip() for o in args.cors_allowed_origins.split(",") if o.strip()]
    where = f"http://{args.host}:{args.port}/v1"

    def slot(model: ServedModel) -> ModelSlot:
        def load() -> AsyncEngine:
            engine = AsyncEngine.from_config(model.config)
            engine.engine.images.limits = images
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

    models = ModelRegistry([slot(m) for m in served], default)
    models.factory = new_model
    app = create_app(
        models, api_key=args.api_key or None, cors_allowed_origins=origins, limits=limits,
        on_load_error=on_load_error, model_runtime_updates=args.allow_runtime_model_updating, mcp=mcp_toolbox(args),
        ui=args.ui, allow_image_urls=args.allow_image_urls,
    )  # fmt: skip

    return app


def base_config(args: argparse.Namespace) -> EngineConfig:
    """The engine settings the flags give every served model (served_models adds each model's own)."""
    from ..config import EngineConfig

    return EngineConfig(
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
    from ..embed.default_model import default_model_for
    from ..loader import GGMLParams, open_model_source
    from ..models import resolve_model_class

    path = config.model or default_model_for(config.task)
    resolve_model_class(open_model_source(path, GGMLParams.from_engine_config(config)).model_config())
    return path
