"""Turning stored (or ISQ-quantized) weight blocks into the quantized modules that replace a model's layers."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import nn

from ..config import WEIGHT_MODES
from ..errors import InvalidRequestError, ModelLoadError
from ..layers.linear import Linear
from ..quant.factory import linear_from_gguf
from ..quant.ggml_types import GGMLQuantizationType
from ..quant.gguf_dequant import SUPPORTED_TYPES, dequantize
from ..quant.quantized_embedding import QuantizedEmbedding
from ..quant.quantized_linear import FusedQuantizedLinear, GGUFLinear, QuantizedLinear

Q = GGMLQuantizationType
FLOAT_TYPES = frozenset({Q.F32, Q.F16, Q.BF16})


class RawPart(NamedTuple):
    """GGUF blocks of a 2-D weight: raw (rows, bytes_per_row) uint8, its type, its torch shape."""

    raw: torch.Tensor
    qtype: GGMLQuantizationType
    shape: tuple[int, int]


def check_supported(name: str, qtype: GGMLQuantizationType) -> None:
    if qtype not in SUPPORTED_TYPES:
        raise ModelLoadError(f"tensor {name!r} is stored as {qtype.name}, a type mistralpy cannot load")


def keep_quantized(weights: str, dtype: torch.dtype) -> bool:
    """Whether weights stay quantized: "auto" keeps them so when the compute dtype is one the quantized kernels take
    (bf16, or float32: the dtype of the ISA levels without AVX-512 BF16), on every level."""
    if weights not in WEIGHT_MODES:
        raise InvalidRequestError(f"unknown weights mode {weights!r}; choose one of: {', '.join(WEIGHT_MODES)}")
    return weights == "quantized" or (weights == "auto" and dtype in (torch.bfloat16, torch.float32))


def concat_parts(parts: list[RawPart]) -> list[RawPart]:
    """Adjacent fused parts of one type become one part: GGUF rows are independent, so their blocks concatenate
    (q, k in Q4_K and v in Q6_K -> [qk, v])."""
    merged = []
    for qtype, run in itertools.groupby(parts, key=lambda p: p.qtype):
        run = list(run)
        raw = torch.cat([p.raw.reshape(p.shape[0], -1) for p in run]) if len(run) > 1 else run[0].raw
        merged.append(RawPart(raw, qtype, (sum(p.shape[0] for p in run), run[0].shape[1])))
    return merged


def all_float(parts: list[RawPart]) -> bool:
    return all(p.qtype in FLOAT_TYPES for p in parts)


def dense_from_parts(parts: list[RawPart], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([dequantize(p.raw, p.qtype, p.shape).to(dtype) for p in parts])


def linear_from_parts(
    parts: list[RawPart], bias: torch.Tensor | None, dtype: torch.dtype, kernels: str = "native"
) -> QuantizedLinear:
    if len(parts) == 1:
        p = parts[0]
        return linear_from_gguf(p.raw, p.qtype, p.shape, bias, dtype, kernels)
    sizes = [p.shape[0] for p in parts]
    biases = [None] * len(parts) if bias is None else list(bias.split(sizes))
    return FusedQuantizedLinear(
        [linear_from_gguf(p.raw, p.qtype, p.shape, b, dtype, kernels) for p, b in zip(parts, biases, strict=True)]
    )


def embedding_from_part(part: RawPart, tied: bool, dtype: torch.dtype, kernels: str = "native") -> QuantizedEmbedding:
    # Tied: the table is also the output projection, so it takes the fastest kernel for it. Untied: only lookups,
    # which the GGUF blocks serve as they are.
    if tied:
        table = linear_from_gguf(part.raw, part.qtype, part.shape, None, dtype, kernels)
    else:
        table = GGUFLinear(part.raw, part.qtype, part.shape, None)
    return QuantizedEmbedding(table, dtype)


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def weight_kind(model: nn.Module, hf_name: str) -> str | None:
    """The kind of module `hf_name` is the weight of in `model`: "linear", "embedding" or None."""
    module_name, _, attr = hf_name.rpartition(".")
    if attr != "weight":
        return None
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    if isinstance(module, Linear):
        return "linear"
    return "embedding" if isinstance(module, nn.Embedding) else None


def split_experts(stacked: torch.Tensor | RawPart) -> list[torch.Tensor | RawPart]:
    """A GGUF tensor of experts stacked along its first axis, (n_expert, rows, cols), as one 2-D weight per expert.
    Blocks never span rows, so each expert's raw blocks are a slice of the stacked ones and stay quantized."""
    if isinstance(stacked, RawPart):
        return [RawPart(raw, stacked.qtype, tuple(stacked.shape[1:])) for raw in stacked.raw.unbind(0)]
    return list(stacked.unbind(0))
