"""ServerContext: what every generation needs: the engine, the served model's name, the model's defaults and the
request limits.

It holds no HTTP object, so the HTTP routes and the in-process Runner share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.async_engine import AsyncEngine
from ..errors import UnknownModelError
from ..lora.request import LoRARequest
from ..lora.selection import AdapterSelector
from .limits import RequestLimits
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from ..mcp_client.toolbox import McpToolbox


@dataclass
class ServerContext:
    engine: AsyncEngine
    model_name: str
    server: str = "this server"  # how errors name who serves the model
    limits: RequestLimits = field(default_factory=RequestLimits)
    lora_modules: dict[str, LoRARequest] = field(default_factory=dict)  # adapter name -> adapter (serve --lora)
    lora_runtime_updates: bool = False  # POST /v1/load_lora_adapter and /v1/unload_lora_adapter are served
    trust_request_chat_template: bool = False  # a request may bring its own chat_template (vLLM's flag)
    is_default: bool = False  # the server's default model: "default" names it too (mistral.rs's)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)  # the engine's latency histograms
    mcp: McpToolbox | None = None  # the MCP servers' tools, run by the server for the model (serve --mcp-config)
    lora_default: tuple[str, ...] = ()  # adapters of requests that name none (an ordering file's `order`)
    lora_selector: AdapterSelector = field(default_factory=AdapterSelector)
    allow_image_urls: bool = False  # image parts may name http(s) URLs the server fetches (serve --allow-image-urls)

    @property
    def generation_defaults(self) -> dict[str, Any]:
        """generation_config.json's sampling defaults; max_new_tokens is not applied (OpenAI's defaults rule)."""
        return self.engine.engine.generation_defaults

    def check_model(self, name: str | None) -> None:
        """A request may omit `model`; naming any model but the served one is an error (404 at the server)."""
        if name in (None, self.model_name) or name in self.lora_modules or self.is_default and name == "default":
            return
        raise UnknownModelError(name, self.model_name, self.server)

    def response_model(self, name: str | None) -> str:
        """The `model` a response names: the adapter a request selected (as vLLM answers), else the served model."""
        return name if name in self.lora_modules else self.model_name

    def lora_request(self, name: str | None, adapters: list[str] | None = None) -> LoRARequest | None:
        """The adapter a request's `model` names (vLLM's way) or the sum of its `adapters` (mistral.rs's), else the
        default adapters (none: the base model); an unknown name is a 404."""
        self.check_model(name)
        model = name if name in self.lora_modules else None
        return self.lora_selector.select(self.lora_modules, model, adapters, self.lora_default)
