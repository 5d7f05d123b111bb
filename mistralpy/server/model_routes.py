"""GET /v1/models (every served model with its status, and the adapters with their `parent`), GET /v1/models/{id},
and, when run-time updates are on, mistral.rs's POST /v1/models/load and /v1/models/unload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import InvalidRequestError
from .http_edge import parse_body
from .model_registry import ModelRegistry
from .protocol_base import OpenAIModel
from .responses import ModelCard, ModelList, now


class ModelRequest(OpenAIModel):
    """`model_id` (mistral.rs's name; `model` too); to load a model new to the server, its path and settings."""

    model_config = ConfigDict(extra="forbid")
    model_id: str = Field(min_length=1, validation_alias=AliasChoices("model_id", "model"))
    model_path: str | None = Field(default=None, min_length=1)
    dtype: str | None = None
    isq: str | None = None
    max_model_len: int | None = Field(default=None, gt=0)
    kv_cache_tokens: int | None = Field(default=None, gt=0)

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"model_id", "model_path"}, exclude_none=True)


def model_routes(models: ModelRegistry) -> list[Route]:
    created = now()

    def cards(name: str) -> list[ModelCard]:
        slot = models.slots[name]
        engine = slot.ctx.engine
        root = Path(slot.path).name if slot.path else None  # the file or folder's name: the paths stay private
        own = ModelCard(
            id=name, created=created, root=root, status=slot.status,
            max_model_len=engine.max_model_len if engine is not None else None,
        )  # fmt: skip
        adapters = [
            ModelCard(id=a.lora_name, created=created, root=Path(a.lora_path).name, parent=name)
            for a in slot.ctx.lora_modules.values()
        ]
        return [own, *adapters]

    async def list_models(_: Request) -> JSONResponse:
        return JSONResponse(ModelList(data=[c for name in models.names for c in cards(name)]).model_dump())

    async def get_model(request: Request) -> JSONResponse:
        name = request.path_params["model_id"]
        slot = models.slot(name)
        own, *adapters = cards(slot.name)
        card = next((c for c in adapters if c.id == name), own)
        return JSONResponse(card.model_dump())

    async def load(request: Request) -> JSONResponse:
        body = await parse_body(request, ModelRequest)
        if body.model_id not in models.slots:
            if body.model_path is None:
                models.slot(body.model_id)  # a 404 naming the served models
            if models.factory is None:
                raise InvalidRequestError("this server loads only the models it was started with")
            models.add(models.factory(body.model_id, {"model": body.model_path, **body.settings()}))
        elif body.model_path is not None or body.settings():
            raise InvalidRequestError(f"the model '{body.model_id}' exists: unload it; load names only its id")
        try:
            await models.load(models.slots[body.model_id])
        except Exception:
            if body.model_path is not None:  # a model new to the server that did not load is not kept
                models.slots.pop(body.model_id, None)
            raise
        return JSONResponse({"model_id": body.model_id, "status": "loaded"})

    async def unload(request: Request) -> JSONResponse:
        body = await parse_body(request, ModelRequest)
        if body.model_path is not None or body.settings():
            raise InvalidRequestError("unload takes only model_id")
        await models.unload(body.model_id)
        return JSONResponse({"model_id": body.model_id, "status": "unloaded"})

    routes = [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    ]
    if models.runtime_updates:
        routes.append(Route("/v1/models/load", load, methods=["POST"]))
        routes.append(Route("/v1/models/unload", unload, methods=["POST"]))
    return routes
