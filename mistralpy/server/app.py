"""The OpenAI-compatible HTTP API on Starlette. Routes are thin: validation lives in protocol.py, generation in the
engine. (FastAPI, with the OpenTelemetry API it imports, would add ~7 MiB to the server's resident memory;
/openapi.json is written from the protocol models instead.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

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
from .anthropic import routes as anthropic
from .auth import ApiKeyMiddleware
from .context import ServerContext
from .embedding_protocol import EmbeddingRequest
from .errors import exception_handlers
from .http_edge import create_chat_completion, create_completion, parse_body, until_disconnect
from .limits import RequestLimits
from .lora_routes import lora_routes
from .metrics import EngineSnapshot, ServerMetrics
from .middleware import BodyLimitMiddleware, ReadinessMiddleware, RequestIdMiddleware
from .openapi import openapi_document
from .prompt_tokens import llama_cpp_tokens, tokenize_request
from .protocol import DetokenizeRequest, TokenizeRequest
from .responses import DetokenizeResponse, ModelCard, ModelList, TokenizeResponse, now
from .responses_api.routes import ResponsesRoutes
from .serving_embedding import embedding

logger = logging.getLogger(__name__)
EngineLoader = Callable[[], AsyncEngine]


def create_app(
    engine: AsyncEngine | EngineLoader,
    served_model_name: str = "default",
    api_key: str | None = None,
    cors_allowed_origins: Sequence[str] = (),
    limits: RequestLimits | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
    lora_modules: dict[str, LoRARequest] | None = None,
    lora_runtime_updates: bool = False,
    allow_image_urls: bool = False,
) -> Starlette:
    """`engine` is a ready AsyncEngine, or a loader run in a worker thread at startup: until it returns, every
    route (and /health) answers 503. A loader failure is passed to on_load_error (serve uses it to exit).
    The app's ServerContext is `app.state.context` (serve stops its engine on shutdown).
    `lora_modules`: LoRA adapters by name, selected by a request's `model` and listed by /v1/models;
    `lora_runtime_updates`: serve vLLM's routes that load and unload adapters (server/lora_routes.py)."""
    loader = None if isinstance(engine, AsyncEngine) else engine
    ctx = ServerContext(None if loader else engine, served_model_name, limits=limits or RequestLimits())
    ctx.lora_modules, ctx.lora_runtime_updates = dict(lora_modules or {}), lora_runtime_updates
    ctx.allow_image_urls = allow_image_urls  # image parts naming http(s) URLs are fetched (off by default)
    metrics = ServerMetrics()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(loader, ctx, metrics, on_load_error)) if loader else None
        if ctx.engine is not None:
            ctx.engine.observer = metrics
            ctx.engine.start()
        yield
        if task is not None:
            task.cancel()
        if ctx.engine is not None:
            await ctx.engine.shutdown()

    app = Starlette(
        routes=_routes(ctx, metrics),
        middleware=_middleware(ctx, api_key, cors_allowed_origins),
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.context = ctx
    return app


def _middleware(ctx: ServerContext, api_key: str | None, cors_allowed_origins: Sequence[str]) -> list[Middleware]:
    """Outermost first: request id + access log wrap everything, so 401/413/503 answers get them too. The API key
    and readiness are checked from the headers alone, before the body is read (and only then is it read)."""
    stack = [Middleware(RequestIdMiddleware)]
    if cors_allowed_origins:  # outside auth: browsers send preflight requests without credentials
        stack.append(Middleware(
            CORSMiddleware, allow_origins=list(cors_allowed_origins), allow_methods=["*"], allow_headers=["*"],
            expose_headers=["X-Request-Id"],
        ))  # fmt: skip
    if api_key:
        stack.append(Middleware(ApiKeyMiddleware, api_key=api_key))
    stack.append(Middleware(ReadinessMiddleware, is_ready=lambda: ctx.engine is not None))
    stack.append(Middleware(BodyLimitMiddleware, limits=ctx.limits))
    return stack


def _routes(ctx: ServerContext, metrics: ServerMetrics) -> list[Route]:
    created = now()
    responses = ResponsesRoutes(ctx)

    async def chat_completions(request: Request) -> Response:
        return await create_chat_completion(ctx, request)

    async def completions(request: Request) -> Response:
        return await create_completion(ctx, request)

    async def embeddings(request: Request) -> Response:
        body = await parse_body(request, EmbeddingRequest)
        return JSONResponse((await until_disconnect(request, embedding(ctx, body))).model_dump())

    async def messages(request: Request) -> Response:
        return await anthropic.create_message(ctx, request)

    async def message_tokens(request: Request) -> Response:
        return await anthropic.count_tokens(ctx, request)

    def model_card(name: str | None = None) -> ModelCard:
        engine = ctx.engine
        root = Path(engine.engine.model_path).name  # the file or folder's name: the server's paths stay private
        if name is not None and name != ctx.model_name:  # a LoRA adapter: its parent is the base model
            root = Path(ctx.lora_modules[name].lora_path).name
            return ModelCard(id=name, created=created, root=root, parent=ctx.model_name)
        return ModelCard(id=ctx.model_name, created=created, root=root, max_model_len=engine.max_model_len)

    async def models(_: Request) -> JSONResponse:
        cards = [model_card(), *map(model_card, ctx.lora_modules)]
        return JSONResponse(ModelList(data=cards).model_dump())

    async def model(request: Request) -> JSONResponse:
        name = request.path_params["model_id"]
        ctx.check_model(name)
        return JSONResponse(model_card(name).model_dump())

    async def health(_: Request) -> Response:
        await ctx.engine.call(lambda _: None)  # the loop thread answers between steps: it is alive
        return Response(status_code=200)

    async def version(_: Request) -> JSONResponse:
        return JSONResponse({"version": __version__, **kernels.isa_report()})

    async def tokenize(request: Request) -> JSONResponse:
        body = await parse_body(request, TokenizeRequest)
        ctx.check_model(body.model)
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
        ctx.check_model(body.model)
        engine = ctx.engine
        vocab = engine.engine.model_config.vocab_size
        ctx.limits.check_tokens([len(body.tokens)], param="tokens", noun="tokens")
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(f"token ids {bad[:5]} are outside the vocabulary (size {vocab})")
        text = await asyncio.to_thread(engine.tokenizer.decode, body.tokens)
        return JSONResponse(DetokenizeResponse(prompt=text, content=text).model_dump())

    async def metrics_route(_: Request) -> Response:
        engine = ctx.engine
        snapshot = await engine.call(lambda e: EngineSnapshot.of(e, engine.finished_counts))
        return Response(metrics.render(snapshot), media_type="text/plain; version=0.0.4; charset=utf-8")

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
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(lora_routes(ctx) if ctx.lora_runtime_updates else []),
    ]


async def _load(
    loader: EngineLoader, ctx: ServerContext, metrics: ServerMetrics, on_error: Callable[[BaseException], None] | None
) -> None:
    try:
        engine = await asyncio.get_running_loop().run_in_executor(None, loader)
    except Exception as e:  # noqa: BLE001 - reported to the caller, which decides how to stop
        logger.error("model loading failed: %s", e)
        if on_error is not None:
            on_error(e)
        return
    engine.observer = metrics
    engine.start()
    ctx.engine = engine
