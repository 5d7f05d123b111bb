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
from .context import ServerContext
from .errors import APIError
from .http_edge import parse_body
from .protocol_base import OpenAIModel


class LoadLoRAAdapterRequest(OpenAIModel):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadLoRAAdapterRequest(OpenAIModel):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None


def lora_routes(ctx: ServerContext) -> list[Route]:
    async def load(request: Request) -> PlainTextResponse:
        body = await parse_body(request, LoadLoRAAdapterRequest)
        name = body.lora_name
        if name in ctx.lora_modules or name == ctx.model_name:
            raise APIError(400, f"The lora adapter '{name}' has already been loaded.", "lora_name")
        lora = LoRARequest(name, max((r.lora_int_id for r in ctx.lora_modules.values()), default=0) + 1, body.lora_path)
        await asyncio.to_thread(ctx.engine.engine.lora.read, lora)  # reads files only: no engine state changes
        if name in ctx.lora_modules:  # loaded meanwhile by another request
            raise APIError(400, f"The lora adapter '{name}' has already been loaded.", "lora_name")
        ctx.lora_modules[name] = lora
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(request: Request) -> PlainTextResponse:
        body = await parse_body(request, UnloadLoRAAdapterRequest)
        name, lora = body.lora_name, ctx.lora_modules.get(body.lora_name)
        if lora is None or body.lora_int_id not in (None, lora.lora_int_id):
            raise APIError(404, f"The lora adapter '{name}' cannot be found.", "lora_name", "model_not_found")
        del ctx.lora_modules[name]  # new requests no longer find it; running ones finish with it
        await ctx.engine.call(lambda engine: engine.release_lora(lora.lora_int_id))
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    return [
        Route("/v1/load_lora_adapter", load, methods=["POST"]),
        Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
    ]
