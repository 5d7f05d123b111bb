"""The OpenAI-compatible HTTP API on Starlette. Routes are thin: validation lives in protocol.py, generation in the
engine. (FastAPI, with the OpenTelemetry API it imports, would add ~7 MiB to the server's resident memory;
/openapi.json is written from the protocol models instead.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__, kernels
from ..engine.async_engine import AsyncEngine
from ..errors import InvalidRequestError
from ..lora.request import LoRARequest
from ..mcp_client.toolbox import McpToolbox
from .anthropic import routes as anthropic
from .auth import ApiKeyMiddleware
from .context import ServerContext
from .embedding_protocol import EmbeddingRequest
from .errors import exception_handlers
from .http_edge import create_chat_completion, create_completion, parse_body, until_disconnect
from .limits import RequestLimits
from .lora_routes import lora_routes
from .metrics import EngineSnapshot, render, tag
from .middleware import BodyLimitMiddleware, ReadinessMiddleware, RequestIdMiddleware
from .model_registry import EngineLoader, ModelRegistry, ModelSlot
from .model_routes import model_routes
from .openapi import openapi_document
from .prompt_tokens import llama_cpp_tokens, tokenize_request
from .protocol import DetokenizeRequest, TokenizeRequest
from .responses import DetokenizeResponse, TokenizeResponse
from .responses_api.routes import ResponsesRoutes
from .serving_embedding import embedding
from .ui.routes import is_ui_path, ui_routes

logger = logging.getLogger(__name__)


def create_app(
    engine: AsyncEngine | EngineLoader | ModelRegistry,
    served_model_name: str = "default",
    api_key: str | None = None,
    cors_allowed_origins: Sequence[str] = (),
    limits: RequestLimits | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
    lora_modules: dict[str, LoRARequest] | None = None,
    lora_runtime_updates: bool = False,
    model_runtime_updates: bool = False,
    mcp: McpToolbox | None = None,
    ui: bool = False,
    allow_image_urls: bool = False,
) -> Starlette:
    """`engine` is a ready AsyncEngine, or a loader run in a worker thread at startup, or a ModelRegistry of several
    models (each named and configured there). Until every model given is loaded, every route (and /health) answers
    503. A loader failure is passed to on_load_error (serve uses it to exit). The app's registry is
    `app.state.models` (serve stops its engines on shutdown).
    `lora_modules`: LoRA adapters by name, selected by a request's `model` and listed by /v1/models;
    `lora_runtime_updates`: serve vLLM's routes that load and unload adapters (server/lora_routes.py);
    `model_runtime_updates`: serve POST /v1/models/load and /v1/models/unload (server/model_routes.py);
    `mcp`: MCP servers whose tools the model may call (connected at startup, before the models load);
    `ui`: serve the chat page at /ui (server/ui/), open without the API key and while the models load;
    `allow_image_urls`: image parts naming http(s) URLs are fetched (off by default)."""
    models = engine if isinstance(engine, ModelRegistry) else _one_model(engine, served_model_name, lora_modules)
    if isinstance(engine, ModelRegistry) and (served_model_name != "default" or lora_modules):
        raise ValueError("a ModelRegistry names its models and their adapters itself")
    for slot in models.slots.values():
        slot.ctx.limits = limits or slot.ctx.limits
        slot.ctx.lora_runtime_updates = slot.ctx.lora_runtime_updates or lora_runtime_updates
        slot.ctx.allow_image_urls = slot.ctx.allow_image_urls or allow_image_urls
        if slot.ctx.engine is not None:  # given ready: serving starts at once (an ASGI client may run no lifespan)
            slot.ctx.engine.observer = slot.ctx.metrics
    models.runtime_updates = model_runtime_updates
    models.mcp = mcp
    models.ready = all(slot.ctx.engine is not None for slot in models.slots.values())

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_load_all(models, on_load_error))
        yield
        task.cancel()
        await models.shutdown("the server is shutting down")
        if mcp is not None:
            await mcp.stop()

    app = Starlette(
        routes=_routes(models) + (ui_routes() if ui else []),
        middleware=_middleware(models, api_key, cors_allowed_origins, limits or RequestLimits(), ui),
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.models = models
    return app


def _one_model(
    engine: AsyncEngine | EngineLoader, name: str, lora_modules: dict[str, LoRARequest] | None
) -> ModelRegistry:
    ready = isinstance(engine, AsyncEngine)
    ctx = ServerContext(engine if ready else None, name, lora_modules=dict(lora_modules or {}))
    path = engine.engine.model_path if ready else None
    return ModelRegistry([ModelSlot(ctx, None if ready else engine, path)])


def _middleware(
    models: ModelRegistry, api_key: str | None, cors_allowed_origins: Sequence[str], limits: RequestLimits, ui: bool
) -> list[Middleware]:
    """Outermost first: request id + access log wrap everything, so 401/413/503 answers get them too. The API key
    and readiness are checked from the headers alone, before the body is read (and only then is it read)."""
    stack = [Middleware(RequestIdMiddleware)]
    if cors_allowed_origins:  # outside auth: browsers send preflight requests without credentials
        stack.append(Middleware(
            CORSMiddleware, allow_origins=list(cors_allowed_origins), allow_methods=["*"], allow_headers=["*"],
            expose_headers=["X-Request-Id"],
        ))  # fmt: skip
    if api_key:
        stack.append(Middleware(ApiKeyMiddleware, api_key=api_key, is_public=is_ui_path if ui else lambda _: False))
    needs_engine = (lambda path: not is_ui_path(path)) if ui else lambda _: True
    stack.append(Middleware(ReadinessMiddleware, is_ready=lambda: models.ready, needs_engine=needs_engine))
    stack.append(Middleware(BodyLimitMiddleware, limits=limits))
    return stack


def _routes(models: ModelRegistry) -> list[Route]:
    responses = ResponsesRoutes(models)

    async def chat_completions(request: Request) -> Response:
        return await create_chat_completion(models, request)

    async def completions(request: Request) -> Response:
        return await create_completion(models, request)

    async def embeddings(request: Request) -> Response:
        body = await parse_body(request, EmbeddingRequest)
        ctx = await models.context(body.model)
        return JSONResponse((await until_disconnect(request, embedding(ctx, body))).model_dump())

    async def messages(request: Request) -> Response:
        return await anthropic.create_message(models, request)

    async def message_tokens(request: Request) -> Response:
        return await anthropic.count_tokens(models, request)

    async def health(_: Request) -> Response:
        for ctx in models.loaded():  # each loop thread answers between steps: it is alive
            await ctx.engine.call(lambda _: None)
        return Response(status_code=200)

    async def version(_: Request) -> JSONResponse:
        return JSONResponse({"version": __version__, **kernels.isa_report()})

    async def tokenize(request: Request) -> JSONResponse:
        body = await parse_body(request, TokenizeRequest)
        ctx = await models.context(body.model)
        if body.messages is not None:
            ctx.limits.check_messages(body.messages)
        engine = ctx.engine
        ids, strs = await tokenize_request(engine.tokenizer, body)
        if body.llama_cpp_shape:
            return JSONResponse({"tokens": await llama_cpp_tokens(engine.tokenizer, ids, body.with_pieces)})
        response = TokenizeResponse(count=len(ids), max_model_len=engine.max_model_len, tokens=ids, token_strs=strs)
        return JSONResponse(response.model_dump())

    async def detokenize(request: Request) -> JSONResponse:
        body = await parse_body(request, DetokenizeRequest)
        ctx = await models.context(body.model)
        engine = ctx.engine
        vocab = engine.engine.model_config.vocab_size
        ctx.limits.check_tokens([len(body.tokens)], param="tokens", noun="tokens")
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(f"token ids {bad[:5]} are outside the vocabulary (size {vocab})")
        text = await asyncio.to_thread(engine.tokenizer.decode, body.tokens)
        return JSONResponse(DetokenizeResponse(prompt=text, content=text).model_dump())

    async def metrics_route(_: Request) -> Response:
        return Response(await render_metrics(models), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(openapi_document(__version__))

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/responses", responses.create, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.get, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses.delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", responses.cancel, methods=["POST"]),
        Route("/v1/messages/count_tokens", message_tokens, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        *model_routes(models),
        Route("/health", health, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *lora_routes(models),
    ]


async def _load_all(models: ModelRegistry, on_error: Callable[[BaseException], None] | None) -> None:
    """Start-up: the MCP servers connected, then every model loaded in turn (one at a time: their peaks of memory
    do not add up)."""
    try:
        if models.mcp is not None:
            await models.mcp.start()
            for slot in models.slots.values():
                slot.ctx.mcp = models.mcp
        for slot in models.slots.values():
            if slot.ctx.engine is not None:
                slot.ctx.engine.start()
            else:
                await models.load(slot)
    except Exception as e:  # noqa: BLE001 - reported to the caller, which decides how to stop
        logger.error("model loading failed: %s", e)
        if on_error is not None:
            on_error(e)
        return
    models.ready = True


async def render_metrics(models: ModelRegistry) -> bytes:
    """Every loaded model's metrics; labelled with model_name where the server serves several (as vLLM's are)."""
    labelled = len(models.slots) > 1
    per_engine = []
    for ctx in models.loaded():
        engine = ctx.engine
        snapshot = await engine.call(lambda e, engine=engine: EngineSnapshot.of(e, engine.finished_counts))
        per_engine.append(ctx.metrics.families(snapshot, tag("model_name", ctx.model_name) if labelled else ""))
    return render(per_engine)
