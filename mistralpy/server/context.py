"""ServerContext: what every route needs: the engine, the served model's name and the model's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.async_engine import AsyncEngine
from .errors import APIError


@dataclass
class ServerContext:
    engine: AsyncEngine
    model_name: str

    @property
    def generation_defaults(self) -> dict[str, Any]:
        """generation_config.json's sampling defaults; max_new_tokens is not applied (OpenAI's defaults rule)."""
        return self.engine.engine.generation_defaults

    def check_model(self, name: str | None) -> None:
        """A request may omit `model`; naming any model but the served one is a 404, as OpenAI answers."""
        if name is not None and name != self.model_name:
            raise APIError(
                404, f"the model '{name}' does not exist; this server serves '{self.model_name}'", "model",
                "model_not_found",
            )  # fmt: skip
