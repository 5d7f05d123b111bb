"""Weight merging (`--lora-merge`, `LLM(lora_merge=...)`): the weighted sum of adapters folded into the base weights
at load, so that requests run at the base model's speed with no adapter named.

- full-precision linears: W += sum_i w_i s_i B_i A_i, computed in float32 and rounded once to the weight's dtype
  (PEFT's merge_and_unload);
- quantized linears (GGUF / ISQ): dequantize -> add -> quantize again to the same GGUF type with the torch quantizers
  of quant/isq.py (bit-identical to gguf-py's for Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0, to ggml's for Q4_K; a direct
  scale choice for Q2_K / Q3_K / Q5_K / Q6_K, which gguf-py cannot quantize), or the float type itself (F32 / F16 /
  BF16); any other type is refused by name. The rounding this adds is measured in docs/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidRequestError, LoRAAdapterError
from ..layers.linear import Linear
from ..quant.factory import linear_from_gguf
from ..quant.ggml_types import GGMLQuantizationType
from ..quant.isq import QUANTIZABLE, quantize
from ..quant.quantized_linear import FusedQuantizedLinear, QuantizedLinear
from .adapter import read_adapter
from .combine import combine_adapters
from .projections import projection_layers
from .targets import map_adapter

Q = GGMLQuantizationType
_FLOAT_TYPES = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}
MERGE_TYPES = (*sorted(t.name for t in QUANTIZABLE), *(t.name for t in _FLOAT_TYPES))


def merge_list(value: object) -> list[tuple[str, float]]:
    """`lora_merge` as (folder, weight) pairs: a folder alone has weight 1."""
    if isinstance(value, (str, Path)):
        value = [value]
    if not isinstance(value, Sequence):
        raise InvalidRequestError(f"lora_merge must be a list of adapter folders or (folder, weight), got {value!r}")
    pairs = []
    for item in value:
        path, weight = (item, 1.0) if isinstance(item, (str, Path)) else _pair(item)
        if not str(path):
            raise InvalidRequestError("lora_merge: an adapter folder is empty")
        pairs.append((str(path), float(weight)))
    return pairs


def _pair(item: object) -> tuple[object, object]:
    ok = isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], (str, Path))
    weight = item[1] if ok else None
    if not ok or isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight != weight:
        raise InvalidRequestError(f"lora_merge entries are folders or (folder, weight) pairs, got {item!r}")
    return item


def merge_adapters(model: nn.Module, merges: list[tuple[str, float]], dtype: torch.dtype) -> None:
    """Every adapter read and checked first, then each targeted linear replaced by its merged weight."""
    adapter = combine_adapters([(read_adapter(path), weight) for path, weight in merges])
    layers = projection_layers(model)
    targets = map_adapter(adapter, model, layers)
    for name, parts in targets.items():
        layer = layers[name]
        delta = torch.zeros(layer.out_features, layer.in_features)
        for part in parts:
            w = part.weights
            delta[part.row_offset : part.row_offset + w.b.shape[0]] += (w.b @ w.a) * w.scale
        merged = fold(layer, delta, dtype, name)
        if merged is not layer:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, merged)


def fold(layer: nn.Module, delta: torch.Tensor, dtype: torch.dtype, name: str) -> nn.Module:
    """`layer` with `delta` (float32, out x in) added to its weight: in place for a dense one, else a new module."""
    if isinstance(layer, Linear):
        layer.weight.data = (layer.weight.data.float() + delta).to(layer.weight.dtype)
        return layer
    if isinstance(layer, FusedQuantizedLinear):
        rows = [p.out_features for p in layer.parts]
        return FusedQuantizedLinear(
            [fold(p, d, dtype, name) for p, d in zip(layer.parts, delta.split(rows), strict=True)]
        )
    if isinstance(layer, QuantizedLinear):
        return requantize(layer, delta, dtype, name)
    raise LoRAAdapterError(f"cannot merge an adapter into {name} ({type(layer).__name__})")


def requantize(layer: QuantizedLinear, delta: torch.Tensor, dtype: torch.dtype, name: str) -> QuantizedLinear:
    qtype = layer.qtype
    weight = layer.dequantize() + delta
    if qtype in _FLOAT_TYPES:
        raw = weight.to(_FLOAT_TYPES[qtype]).view(torch.uint8)
    elif qtype in QUANTIZABLE:
        raw = quantize(weight, qtype)
    else:
        raise LoRAAdapterError(
            f"merging a LoRA adapter into {name}, stored as {Q(qtype).name}, is not supported (merge re-quantizes "
            f"to {', '.join(MERGE_TYPES)}); serve the adapter unmerged instead (--lora)"
        )
    return linear_from_gguf(raw, qtype, (layer.out_features, layer.in_features), layer.bias, dtype)
