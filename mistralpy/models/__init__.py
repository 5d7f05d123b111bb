"""Architecture registry: GGUF `general.architecture` and HF `architectures` names -> model class, imported lazily."""

from __future__ import annotations

import importlib

from ..config import ModelConfig
from ..errors import UnsupportedArchitectureError

# name -> (module under mistralpy.models, class name). GGUF names are lower case, HF names end in "ForCausalLM"
# (encoders: "BertModel").
_REGISTRY: dict[str, tuple[str, str]] = {
    "llama": ("llama", "LlamaForCausalLM"),
    "LlamaForCausalLM": ("llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("mistral", "MistralForCausalLM"),
    "MixtralForCausalLM": ("mixtral", "MixtralForCausalLM"),
    "gemma": ("gemma", "GemmaForCausalLM"),
    "GemmaForCausalLM": ("gemma", "GemmaForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "Gemma2ForCausalLM": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3": ("gemma3", "Gemma3ForCausalLM"),
    "Gemma3ForCausalLM": ("gemma3", "Gemma3ForCausalLM"),
    "Gemma3ForConditionalGeneration": ("gemma3_vlm", "Gemma3ForConditionalGeneration"),
    "phi2": ("phi2", "Phi2ForCausalLM"),
    "PhiForCausalLM": ("phi2", "Phi2ForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
    "Phi3ForCausalLM": ("phi3", "Phi3ForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "Qwen2ForCausalLM": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "Qwen3ForCausalLM": ("qwen3", "Qwen3ForCausalLM"),
    "BertModel": ("bert", "BertModel"),
}


def supported_architectures() -> list[str]:
    return sorted(_REGISTRY)


def _registry_key(cfg: ModelConfig) -> str:
    # llama.cpp writes Mixtral as the "llama" architecture with experts
    if cfg.architecture == "llama" and cfg.extra.get("num_local_experts"):
        return "MixtralForCausalLM"
    return cfg.architecture


def resolve_model_class(cfg: ModelConfig) -> type:
    entry = _REGISTRY.get(_registry_key(cfg))
    if entry is None:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {cfg.architecture!r}; supported: {', '.join(supported_architectures())}"
        )
    module, cls = entry
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
