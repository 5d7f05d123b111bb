"""vLLM's runtime LoRA routes: POST /v1/load_lora_adapter {lora_name, lora_path} and POST /v1/unload_lora_adapter
{lora_name, lora_int_id?}, served only when the server allows runtime updates (serve --allow-runtime-lora-updating,
or vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING=true). A loaded adapter is read and checked against the model at once (in
a worker thread); its weights enter a slot with its first request, evicting the least recently used idle adapter."""

from __future__ import annotations

import asyncio

from pydantic import Field
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ..lora.request import LoRARequest
from .errors import APIError
from .http_edge import parse_body
from .model_registry import ModelRegistry
from .protocol_base import OpenAIModel


class LoadLoRAAdapterRequest(OpenAIModel):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)
    model: str | None = None  # the base model where a server serves several (default: its default model)


class UnloadLoRAAdapterRequest(OpenAIModel):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None


def lora_routes(models: ModelRegistry) -> list[Route]:
    """Served when the server allows runtime updates (for any of its models)."""

    async def load(request: Request) -> PlainTextResponse:
        body = await parse_body(request, LoadLoRAAdapterRequest)
        ctx, name = await models.context(body.model), body.lora_name
        if not ctx.lora_runtime_updates:
            raise APIError(400, f"the model '{ctx.model_name}' does not load adapters at run time", "model")
        _check_new(models, name)
        lora = LoRARequest(name, max((r.lora_int_id for r in ctx.lora_modules.values()), default=0) + 1, body.lora_path)
        await asyncio.to_thread(ctx.engine.engine.lora.read, lora)  # reads files only: no engine state changes
        _check_new(models, name)  # loaded meanwhile by another request
        ctx.lora_modules[name] = lora  # the dict the model's slot holds: the copy `ctx` shares it
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(request: Request) -> PlainTextResponse:
        body = await parse_body(request, UnloadLoRAAdapterRequest)
        name = body.lora_name
        slot = next((s for s in models.slots.values() if name in s.ctx.lora_modules), None)
        lora = slot.ctx.lora_modules[name] if slot is not None else None
        if lora is None or body.lora_int_id not in (None, lora.lora_int_id):
            raise APIError(404, f"The lora adapter '{name}' cannot be found.", "lora_name", "model_not_found")
        del slot.ctx.lora_modules[name]  # new requests no longer find it; running ones finish with it
        if slot.ctx.engine is not None:
            await slot.ctx.engine.call(lambda engine: engine.release_lora(lora.lora_int_id))
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    if not any(slot.ctx.lora_runtime_updates for slot in models.slots.values()):
        return []
    return [
        Route("/v1/load_lora_adapter", load, methods=["POST"]),
        Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
    ]


def _check_new(models: ModelRegistry, name: str) -> None:
    if name in models.slots or any(name in slot.ctx.lora_modules for slot in models.slots.values()):
        raise APIError(400, f"The lora adapter '{name}' has already been loaded.", "lora_name")
