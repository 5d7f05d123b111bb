"""Where an X-LoRA model's adapters land: every adapter mapped onto our linears (as a plain LoRA is), and PEFT's
numbering of the LoRA layers, which the classifier's layerwise output follows.

PEFT numbers its LoRA layers in the Hugging Face model's module order, over every module that some adapter targets:
decoder layer by layer, each layer's projections in the order its modeling code defines them. That order is data
here, per architecture (Phi-3 defines o_proj before qkv_proj)."""

from __future__ import annotations

import re

import torch
from torch import nn

from ...errors import LoRAAdapterError
from ...layers.linear import Linear
from ...quant.quantized_linear import QuantizedLinear
from ..manager import _inside_quantized
from ..targets import map_adapter
from .checkpoint import XLoraCheckpoint

_LLAMA_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_ORDER = {"Phi3ForCausalLM": ["o_proj", "qkv_proj", "gate_up_proj", "down_proj"]}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")

# one rank part of one adapter in one of our linears: (LoRA layer * adapters + adapter, first row, A, scale * B)
Part = tuple[int, int, torch.Tensor, torch.Tensor]


def candidate_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The decoder layers' projections an adapter may target (MoE experts and parts of fused quantized ones aside)."""
    return {
        name: m
        for name, m in model.named_modules()
        if name.startswith("model.layers.") and isinstance(m, Linear | QuantizedLinear) and ".experts." not in name
        and not _inside_quantized(model, name)
    }  # fmt: skip


def plan_targets(model: nn.Module, checkpoint: XLoraCheckpoint) -> tuple[dict[str, int], dict[str, list[Part]]]:
    """(PEFT's number of each LoRA layer by its HF module name, our linear's name -> its parts)."""
    linears = candidate_linears(model)
    placed = []  # (HF module name, our linear, adapter index, row offset, weights)
    for j, adapter in enumerate(checkpoint.adapters):
        module_of = {id(w): module for module, w in adapter.modules.items()}
        for target, parts in map_adapter(adapter, model, linears).items():
            placed += [(module_of[id(p.weights)], target, j, p.row_offset, p.weights) for p in parts]
    order = _ORDER.get(type(model).__name__, _LLAMA_ORDER)
    numbers = {m: i for i, m in enumerate(sorted({p[0] for p in placed}, key=lambda m: _position(m, order)))}
    n = checkpoint.config.num_adapters
    plan: dict[str, list[Part]] = {}
    for module, target, j, row, w in placed:
        plan.setdefault(target, []).append((numbers[module] * n + j, row, w.a, w.b * w.scale))
    return numbers, plan


def _position(module: str, order: list[str]) -> tuple[int, int]:
    m, leaf = _LAYER.match(module), module.rpartition(".")[2]
    if m is None or leaf not in order:
        raise LoRAAdapterError(f"X-LoRA cannot place module {module!r} in PEFT's layer order of this model")
    return int(m[1]), order.index(leaf)
