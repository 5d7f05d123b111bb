"""ModelRegistry: the models one server serves, by name. Each has its own engine and KV pool; a request's `model`
picks one (an adapter's name picks its base model; none, or "default", picks the default model). With run-time
updates on, a model can be unloaded (its memory freed, its name kept) and loaded again, as mistral.rs does: a request
for an unloaded model loads it first."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.async_engine import AsyncEngine
from ..errors import InvalidRequestError, UnknownModelError
from ..heap import trim_heap
from .context import ServerContext

if TYPE_CHECKING:
    from ..mcp_client.toolbox import McpToolbox

logger = logging.getLogger(__name__)
EngineLoader = Callable[[], AsyncEngine]
# A model asked for at run time by name and settings (POST /v1/models/load) -> its slot, not yet loaded
SlotFactory = Callable[[str, dict[str, Any]], "ModelSlot"]
DEFAULT = "default"  # the name that picks the default model where no model is called so (mistral.rs's)


@dataclass
class ModelSlot:
    """One served model: its context (engine None while unloaded) and how to load it (None: given ready)."""

    ctx: ServerContext
    loader: EngineLoader | None = None
    path: str | None = None  # the file or folder, for /v1/models
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.ctx.model_name

    @property
    def status(self) -> str:
        return "loaded" if self.ctx.engine is not None else "unloaded"


class ModelRegistry:
    def __init__(self, slots: list[ModelSlot], default: str | None = None, server: str = "this server") -> None:
        if not slots:
            raise InvalidRequestError("a server needs at least one model")
        self.slots: dict[str, ModelSlot] = {}
        self.server = server
        self.mcp: McpToolbox | None = None  # the MCP tools every model is offered, once connected
        for slot in slots:
            self.add(slot)
        self.default = default if default is not None else slots[0].name
        if self.default not in self.slots:
            raise InvalidRequestError(f"the default model '{self.default}' is not among {self.names}")
        self.ready = False  # every model given at start-up is loaded
        self.runtime_updates = False  # POST /v1/models/load and /v1/models/unload are served
        self.factory: SlotFactory | None = None  # how a model new to the server is loaded at run time

    @property
    def names(self) -> list[str]:
        return list(self.slots)

    def add(self, slot: ModelSlot) -> None:
        """A new model; its name and its adapters' names must be new to the server (they route requests)."""
        taken = set(self.slots) | {a for s in self.slots.values() for a in s.ctx.lora_modules}
        clash = taken & ({slot.name} | set(slot.ctx.lora_modules))
        if clash:
            raise InvalidRequestError(f"the model name '{sorted(clash)[0]}' is used twice on this server")
        slot.ctx.server = self.server
        slot.ctx.mcp = slot.ctx.mcp or self.mcp
        self.slots[slot.name] = slot

    def slot(self, name: str | None) -> ModelSlot:
        """The model a request's `model` names (an adapter: its base); another name is a 404."""
        if name is None or name == DEFAULT and DEFAULT not in self.slots:
            return self.slots[self.default]
        if name in self.slots:
            return self.slots[name]
        for slot in self.slots.values():
            if name in slot.ctx.lora_modules:
                return slot
        raise UnknownModelError(name, "', '".join(self.slots), self.server)

    async def context(self, name: str | None) -> ServerContext:
        """The context a request runs in, its model loaded first if it was unloaded. A copy bound to the engine of
        this moment: an unload meanwhile ends the request with the engine's error, never a missing engine."""
        slot = self.slot(name)
        if slot.ctx.engine is None:
            await self.load(slot)
        return dataclasses.replace(slot.ctx, is_default=slot.name == self.default)

    def loaded(self) -> list[ServerContext]:
        return [s.ctx for s in self.slots.values() if s.ctx.engine is not None]

    async def load(self, slot: ModelSlot) -> None:
        async with slot.lock:
            if slot.ctx.engine is not None:
                return
            if slot.loader is None:
                raise InvalidRequestError(f"the model '{slot.name}' was unloaded and cannot be loaded again")
            engine = await asyncio.get_running_loop().run_in_executor(None, slot.loader)
            self.attach(slot, engine)

    def attach(self, slot: ModelSlot, engine: AsyncEngine) -> None:
        engine.observer = slot.ctx.metrics
        engine.start()
        slot.ctx.engine = engine

    async def unload(self, name: str) -> None:
        """Stop the model's engine (its open requests end with an error) and free its memory; the name stays."""
        slot = self.slots.get(name)
        if slot is None:
            raise UnknownModelError(name, "', '".join(self.slots), self.server)
        async with slot.lock:
            engine, slot.ctx.engine = slot.ctx.engine, None
            if engine is not None:
                await engine.shutdown(f"the model '{name}' was unloaded")
                del engine
                gc.collect()
                trim_heap()
                logger.info("model '%s' unloaded", name)

    async def shutdown(self, reason: str) -> None:
        for ctx in self.loaded():
            await ctx.engine.shutdown(reason)
