"""SpeculativeConfig: vLLM's `speculative_config` (method, model, num_speculative_tokens, prompt_lookup_min/max,
quantization), validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidRequestError
from ..quant.isq import resolve_isq

METHODS = ("ngram", "draft_model")


@dataclass(frozen=True)
class SpeculativeConfig:
    method: str | None = None  # None: "draft_model" where a model is given, else "ngram"
    num_speculative_tokens: int = 4  # K: draft tokens verified per step, at most
    prompt_lookup_min: int = 1  # ngram: the shortest suffix of a request's tokens matched against its earlier tokens
    prompt_lookup_max: int = 4  # ngram: the longest, tried first
    model: str | None = None  # draft_model: a GGUF file or HF folder with the target's tokenizer
    quantization: str | None = None  # draft_model: in-situ quantization of the draft's full-precision weights
    adaptive_k: bool = True  # K per request from its acceptance and the batch size (adaptive_k.py); False: always K

    def __post_init__(self) -> None:
        if self.method is None:
            object.__setattr__(self, "method", "ngram" if self.model is None else "draft_model")
        if self.method not in METHODS:
            raise InvalidRequestError(
                f"unknown speculative method {self.method!r}; choose one of: {', '.join(METHODS)}"
            )
        if self.method == "draft_model" and not (isinstance(self.model, str) and self.model):
            raise InvalidRequestError("speculative method 'draft_model' needs speculative_config 'model' (a path)")
        if self.method == "ngram" and (self.model is not None or self.quantization is not None):
            raise InvalidRequestError("speculative method 'ngram' takes no 'model' or 'quantization' (no draft model)")
        resolve_isq(self.quantization)
        if not isinstance(self.adaptive_k, bool):
            raise InvalidRequestError(f"speculative_config adaptive_k must be true or false, got {self.adaptive_k!r}")
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
