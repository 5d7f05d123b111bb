"""The QuantizedLinear contract and its reference implementation (factory.py picks a kernel per GGUF type).

Contract (every implementation):
- `in_features`, `out_features`, `qtype` (the GGUF type of the stored weight; None for a fused mix of types);
- `forward(x)`: x (..., in_features) in the compute dtype -> (..., out_features) in x's dtype;
- `forward_float32(x)`: the same as float32 (logits);
- `dequantize()`: the (out_features, in_features) float32 weight, bit-exact with `gguf_dequant.dequantize`;
- `dequantize_rows(ids)`: rows of it, decoding only those (embedding lookups);
- built from GGUF blocks, raw uint8 of shape (out_features, bytes_per_row), for every type in `SUPPORTED_TYPES`, by
  `factory.linear_from_gguf(raw, qtype, shape, bias=None, dtype=...)`;
- `nbytes`: the memory its tensors hold.
A fast path computes the same function as dequantize-then-matmul, up to float rounding in the activation dtype, or,
on the native kernel, up to rounding x to int8 per group of 32 first (its exact reference: qmatmul_reference.py), for
bf16 and float32 x alike; torch's int4 kernel takes float32 x rounded to bf16. The float32 reference of a quantized
model is its dequantized weights (weights="dequantized").
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError
from ..layers.linear import row_invariant_linear
from .ggml_types import GGMLQuantizationType
from .gguf_dequant import dequantize

Q = GGMLQuantizationType


class QuantizedLinear(nn.Module, abc.ABC):
    """Base of every linear layer whose weight stays in a quantized form. Subclasses implement forward/dequantize."""

    qtype: GGMLQuantizationType | None

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        if bias is not None and bias.shape != (out_features,):
            raise ModelLoadError(f"bias of shape {tuple(bias.shape)} for {out_features} output features")
        self.register_buffer("bias", bias)

    @abc.abstractmethod
    def dequantize(self) -> torch.Tensor:
        """The weight as (out_features, in_features) float32, bit-exact with gguf's dequantization."""

    def dequantize_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of `dequantize()`: what an embedding lookup needs. Implementations decode only those rows."""
        return self.dequantize()[ids]

    def forward_float32(self, x: torch.Tensor) -> torch.Tensor:
        """forward with a float32 result (logits): implementations whose kernel can store it so override this."""
        return self(x).float()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def extra_repr(self) -> str:
        name = self.qtype.name if self.qtype is not None else "mixed"
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={name}"

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize().to(x.dtype), bias)


class GGUFLinear(QuantizedLinear):
    """The reference: keeps the GGUF blocks as they are and dequantizes them on every call. Correct for every type."""

    def __init__(
        self, raw: torch.Tensor, qtype: GGMLQuantizationType, shape: tuple[int, ...], bias: torch.Tensor | None
    ) -> None:
        out_features, in_features = (int(s) for s in shape)
        super().__init__(in_features, out_features, bias)
        self.qtype = GGMLQuantizationType(qtype)
        self.register_buffer("blocks", raw.reshape(out_features, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._reference(x)

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.blocks, self.qtype, (self.out_features, self.in_features))

    def dequantize_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return dequantize(self.blocks[ids], self.qtype, (len(ids), self.in_features))


class DenseLinear(GGUFLinear):
    """GGUF blocks plus their dequantized copy in the compute dtype, for types without an exact quantized kernel.

    The blocks serve `dequantize()`; the dense copy makes forward as fast as a dense layer (and as large).
    """

    def __init__(
        self,
        raw: torch.Tensor,
        qtype: GGMLQuantizationType,
        shape: tuple[int, ...],
        bias: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> None:
        super().__init__(raw, qtype, shape, bias)
        self.register_buffer("weight", self.dequantize().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype:
            return self._reference(x)
        return row_invariant_linear(x, self.weight, self.bias)


class FusedQuantizedLinear(QuantizedLinear):
    """Projections fused along the output dimension whose parts are stored in different types (e.g. q/k in Q4_K and
    v in Q6_K): each part runs its own kernel and the outputs are concatenated."""

    qtype = None

    def __init__(self, parts: list[QuantizedLinear]) -> None:
        in_features = parts[0].in_features
        if any(p.in_features != in_features for p in parts):
            raise ModelLoadError("fused projections must share their input size")
        super().__init__(in_features, sum(p.out_features for p in parts), None)
        self.parts = nn.ModuleList(parts)

    @property
    def qtypes(self) -> list[GGMLQuantizationType | None]:
        return [p.qtype for p in self.parts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def dequantize(self) -> torch.Tensor:
        return torch.cat([p.dequantize() for p in self.parts])
