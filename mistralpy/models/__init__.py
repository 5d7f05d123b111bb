"""Architecture registry: GGUF `general.architecture` and HF `architectures` names -> model class, imported lazily."""

from __future__ import annotations

import importlib

from ..config import ModelConfig
from ..errors import UnsupportedArchitectureError

_REGISTRY: dict[str, tuple[str, str]] = {
    "llama": ("llama", "LlamaForCausalLM"),
    "LlamaForCausalLM": ("llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("llama", "LlamaForCausalLM"),
}


def supported_architectures() -> list[str]:
    return sorted(_REGISTRY)


def resolve_model_class(cfg: ModelConfig) -> type:
    entry = _REGISTRY.get(cfg.architecture)
    if entry is None:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {cfg.architecture!r}; supported: {', '.join(supported_architectures())}"
        )
    window = cfg.extra.get("sliding_window")
    if window is not None and window < cfg.max_position_embeddings:
        raise UnsupportedArchitectureError(
            f"sliding-window attention (window {window}) is not supported yet; "
            f"supported: {', '.join(supported_architectures())} without sliding window"
        )
    module, cls = entry
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
