"""ServerContext: what every generation needs: the engine, the served model's name, the model's defaults and the
request limits.

It holds no HTTP object, so the HTTP routes and the in-process Runner share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.async_engine import AsyncEngine
from ..errors import UnknownModelError
from .limits import RequestLimits


@dataclass
class ServerContext:
    engine: AsyncEngine
    model_name: str
    server: str = "this server"  # how errors name who serves the model
    limits: RequestLimits = field(default_factory=RequestLimits)

    @property
    def generation_defaults(self) -> dict[str, Any]:
        """generation_config.json's sampling defaults; max_new_tokens is not applied (OpenAI's defaults rule)."""
        return self.engine.engine.generation_defaults

    def check_model(self, name: str | None) -> None:
        """A request may omit `model`; naming any model but the served one is an error (404 at the server)."""
        if name is not None and name != self.model_name:
            raise UnknownModelError(name, self.model_name, self.server)
