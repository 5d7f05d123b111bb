"""The linears an adapter can target: every projection of the decoder layers, dense or quantized. MoE experts are
left out (each sees only its routed tokens, not the step's rows the slots index), and so are the parts inside a
FusedQuantizedLinear (not model projections of their own)."""

from __future__ import annotations

from torch import nn

from ..layers.linear import Linear
from ..quant.quantized_linear import QuantizedLinear
from .layer import LoRALinear


def projection_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in model.named_modules()
        if name.startswith("model.layers.") and isinstance(m, Linear | QuantizedLinear) and ".experts." not in name
        and not isinstance(m, LoRALinear) and not _inside_quantized(model, name)
    }  # fmt: skip


def _inside_quantized(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    while parent:
        if isinstance(model.get_submodule(parent), QuantizedLinear):
            return True
        parent = parent.rpartition(".")[0]
    return False
