"""SpeculativeConfig: vLLM's `speculative_config` (method, num_speculative_tokens, prompt_lookup_min/max), validated
once at construction."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidRequestError

METHODS = ("ngram",)


@dataclass(frozen=True)
class SpeculativeConfig:
    method: str = "ngram"
    num_speculative_tokens: int = 4  # K: draft tokens verified per step, at most
    prompt_lookup_min: int = 1  # the shortest suffix of a request's tokens matched against its earlier tokens
    prompt_lookup_max: int = 4  # the longest, tried first
    model: str | None = None  # a draft model: not done yet (a clear error, never ignored)

    def __post_init__(self) -> None:
        if self.model is not None:
            raise InvalidRequestError(
                "speculative_config 'model' (a draft model) is not supported yet; use method 'ngram'"
            )
        if self.method not in METHODS:
            raise InvalidRequestError(
                f"unknown speculative method {self.method!r}; choose one of: {', '.join(METHODS)}"
            )
        for name in ("num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequestError(f"speculative_config {name} must be a positive integer, got {value!r}")
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise InvalidRequestError(
                f"speculative_config prompt_lookup_min ({self.prompt_lookup_min}) exceeds prompt_lookup_max "
                f"({self.prompt_lookup_max})"
            )

    @classmethod
    def of(cls, value: SpeculativeConfig | dict[str, Any] | None) -> SpeculativeConfig | None:
        """A config from vLLM's dict form (unknown keys are an error), or the config itself, or None."""
        if value is None or isinstance(value, SpeculativeConfig):
            return value
        if not isinstance(value, dict):
            raise InvalidRequestError(f"speculative_config must be a dict, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise InvalidRequestError(f"unknown speculative_config keys {unknown}; it takes {', '.join(sorted(known))}")
        return cls(**value)
