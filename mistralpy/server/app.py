"""The OpenAI-compatible HTTP API. Routes are thin: validation lives in protocol.py, generation in the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .. import __version__
from ..engine.async_engine import AsyncEngine
from ..engine.engine import Engine
from ..errors import InvalidRequestError
from .auth import ApiKeyMiddleware
from .context import ServerContext
from .errors import install_error_handlers
from .protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from .responses import DetokenizeResponse, ModelCard, ModelList, TokenizeResponse, now
from .serving_chat import create_chat_completion
from .serving_completion import create_completion


def create_app(engine: AsyncEngine, served_model_name: str = "default", api_key: str | None = None) -> FastAPI:
    ctx = ServerContext(engine, served_model_name)
    created = now()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        await engine.shutdown()

    app = FastAPI(title="mistralpy", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, raw: Request) -> Response:
        return await create_chat_completion(ctx, body, raw)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, raw: Request) -> Response:
        return await create_completion(ctx, body, raw)

    def model_card() -> ModelCard:
        return ModelCard(
            id=served_model_name, created=created, root=engine.engine.model_path, max_model_len=engine.max_model_len
        )

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(ModelList(data=[model_card()]).model_dump())

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> JSONResponse:
        ctx.check_model(model_id)
        return JSONResponse(model_card().model_dump())

    @app.get("/health")
    async def health() -> Response:
        await engine.call(lambda _: None)  # the loop thread answers between steps: it is alive
        return Response(status_code=200)

    @app.get("/version")
    async def version() -> JSONResponse:
        return JSONResponse({"version": __version__})

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> JSONResponse:
        ctx.check_model(body.model)
        tokenizer = engine.tokenizer
        if body.messages is not None:
            messages = [m.to_template() for m in body.messages]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=body.add_generation_prompt)
            ids = tokenizer.encode(text, add_special_tokens=bool(body.add_special_tokens))
        else:
            add_special = body.add_special_tokens is None or body.add_special_tokens
            ids = tokenizer.encode(body.prompt, add_special_tokens=add_special)
        strs = tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        response = TokenizeResponse(count=len(ids), max_model_len=engine.max_model_len, tokens=ids, token_strs=strs)
        return JSONResponse(response.model_dump())

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> JSONResponse:
        ctx.check_model(body.model)
        vocab = engine.engine.model_config.vocab_size
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(f"token ids {bad[:5]} are outside the vocabulary (size {vocab})")
        return JSONResponse(DetokenizeResponse(prompt=engine.tokenizer.decode(body.tokens)).model_dump())

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(await engine.call(lambda e: _metrics_text(e, engine)))

    return app


def _metrics_text(engine: Engine, async_engine: AsyncEngine) -> str:
    """A few Prometheus gauges and counters, read on the loop thread so the numbers are from one moment."""
    sched, blocks = engine.scheduler, engine.block_manager
    rows = [
        ("gauge", "num_requests_running", {}, len(sched.running)),
        ("gauge", "num_requests_waiting", {}, len(sched.waiting)),
        ("gauge", "kv_cache_usage_perc", {}, blocks.usage),
        ("gauge", "num_free_kv_blocks", {}, blocks.num_free_blocks),
        ("gauge", "max_batch_size", {}, sched.stats.max_batch_size),
        ("counter", "prompt_tokens_total", {}, sched.stats.num_prompt_tokens_computed),
        ("counter", "generation_tokens_total", {}, sched.stats.num_generation_tokens),
        ("counter", "num_preemptions_total", {}, sched.stats.num_preemptions),
    ]
    for reason in ("stop", "length", "abort"):
        rows.append(("counter", "request_finished_total", {"reason": reason}, async_engine.finished_counts[reason]))
    lines, typed = [], set()
    for kind, name, labels, value in rows:
        if name not in typed:
            lines.append(f"# TYPE mistralpy:{name} {kind}")
            typed.add(name)
        label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"mistralpy:{name}{{{label_text}}} {value}" if label_text else f"mistralpy:{name} {value}")
    return "\n".join(lines) + "\n"
