"""Where an adapter's modules land in our model: a Hugging Face projection (q_proj) is a row range of one of our
linears (qkv_proj), found with the model class's `fused` table; every shape is checked against the base model."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from torch import nn

from ..config import ModelConfig
from ..errors import LoRAAdapterError, UnsupportedArchitectureError
from ..models import resolve_model_class
from .adapter import LoRAAdapter, LoRAWeights

# GGUF files of Mistral models are the "llama" architecture: an adapter made on either fits either
_INTERCHANGEABLE = {"LlamaForCausalLM", "MistralForCausalLM"}


@dataclass
class TargetPart:
    """An adapter module's place in one of our linears: output rows [row_offset, row_offset + rows)."""

    row_offset: int
    weights: LoRAWeights


def map_adapter(adapter: LoRAAdapter, model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, list[TargetPart]]:
    """Our linear's name -> the adapter's parts in it. `layers`: our LoRA-capable linears by module name."""
    check_architecture(adapter, model)
    cfg: ModelConfig = model.config
    targets: dict[str, list[TargetPart]] = {}
    for module, weights in adapter.modules.items():
        parent, _, leaf = module.rpartition(".")
        fused = type(model).fused.get(leaf)
        target = f"{parent}.{fused[0]}" if fused else module
        layer = layers.get(target)
        if layer is None:
            raise LoRAAdapterError(
                f"{adapter.path}: unknown target module {module!r} (not a projection of this "
                f"{cfg.architecture} model's decoder layers)"
            )
        offset, rows = _rows(fused, layer, cfg) if fused else (0, layer.out_features)
        _check_shapes(adapter, module, weights, layer.in_features, rows)
        targets.setdefault(target, []).append(TargetPart(offset, weights))
    return targets


def check_architecture(adapter: LoRAAdapter, model: nn.Module) -> None:
    name = adapter.base_model_class
    if name is None:
        return
    try:
        theirs = resolve_model_class(SimpleNamespace(architecture=name, extra={}))
    except UnsupportedArchitectureError:
        raise LoRAAdapterError(
            f"{adapter.path}: the adapter was made for {name}, an architecture mistralpy does not run"
        ) from None
    ours = type(model)
    if theirs is not ours and not {theirs.__name__, ours.__name__} <= _INTERCHANGEABLE:
        raise LoRAAdapterError(
            f"{adapter.path}: the adapter was made for {name}; the base model is {model.config.architecture}"
        )


def _rows(fused: tuple[str, int], layer: nn.Module, cfg: ModelConfig) -> tuple[int, int]:
    """(first row, rows) of a fused linear's part."""
    name, index = fused
    if name == "qkv_proj":
        q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
        sizes = [q, kv, kv]
    else:  # equal parts (gate_up_proj)
        sizes = [layer.out_features // 2] * 2
    if sum(sizes) != layer.out_features:
        raise LoRAAdapterError(f"cannot split {name} of {layer.out_features} rows into parts of {sizes}")
    return sum(sizes[:index]), sizes[index]


def _check_shapes(adapter: LoRAAdapter, module: str, w: LoRAWeights, in_features: int, rows: int) -> None:
    if w.a.shape[1] != in_features:
        raise LoRAAdapterError(
            f"{_where(adapter, module)}: lora_A takes {w.a.shape[1]} input features, but the base model's layer takes "
            f"{in_features} (an adapter for a model of another size?)"
        )
    if w.b.shape[0] != rows:
        raise LoRAAdapterError(
            f"{_where(adapter, module)}: lora_B gives {w.b.shape[0]} output features, but the base model's layer "
            f"gives {rows} (an adapter for a model of another size?)"
        )


def _where(adapter: LoRAAdapter, module: str) -> str:
    return f"{adapter.path / 'adapter_model.safetensors'}: {module}"
