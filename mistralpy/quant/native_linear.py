"""NativeQuantLinear: GGUF types with groups of 32 on the native AVX-512 BF16 kernel (kernels/quant_matmul.cpp).

The weight stays as its GGUF codes and per-group parameters, w = a * (q + c) + b, exactly (no requantization):
codes of up to 4 bits are packed two to a byte, wider ones (Q5_*, Q8_0) take a byte each. Activations stay in bf16;
the kernel's sums are float32. From 8 rows of x (batched decode) the kernel unpacks panels of 16 weight rows' codes
in cache; large batches (prefill) dequantize the whole weight to bf16 once and run one GEMM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gguf.constants import GGMLQuantizationType

from .. import kernels
from .affine import GroupAffine, exact_half, gguf_to_affine
from .quantized_linear import QuantizedLinear

GROUP = 32
NATIVE_TYPES: frozenset[GGMLQuantizationType] = frozenset(
    GGMLQuantizationType[t] for t in ("Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q8_0")
)
# From this many rows of x on, one bf16 GEMM over the dequantized weight beats the quantized dot products.
DENSE_MIN_ROWS = 64


def native_qmatmul():
    """The native kernels if they are built with qmatmul (it needs AVX-512 BF16), else None."""
    native = kernels.native_module()
    return native if native is not None and native.has_qmatmul() else None


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(rows, cols) codes in [0, 16) -> (rows, cols / 2) bytes in the kernel's layout, 16 bytes per group: groups four
    at a time as 32 little-endian u16 lanes (lane i: weight i of each group in bits 0-3, 4-7, 8-11, 12-15); two left
    over share 32 bytes (weight j low, 32 + j high); one left over takes 16 (weight j low, 16 + j high)."""
    rows, cols = q.shape
    groups = cols // GROUP
    quads, pairs = groups // 4 * 4 * GROUP, groups % 4 // 2 * 2 * GROUP
    g = q[:, :quads].reshape(rows, -1, 4, GROUP)
    parts = [torch.stack([g[:, :, 0] | g[:, :, 1] << 4, g[:, :, 2] | g[:, :, 3] << 4], dim=-1).reshape(rows, -1)]
    if pairs:
        p = q[:, quads : quads + pairs].reshape(rows, 2, GROUP)
        parts.append(p[:, 0] | p[:, 1] << 4)
    if quads + pairs < cols:
        last = q[:, quads + pairs :].reshape(rows, 2, GROUP // 2)
        parts.append(last[:, 0] | last[:, 1] << 4)
    return torch.cat(parts, dim=1)


def unpack_nibbles(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """The inverse of `pack_nibbles`."""
    rows = packed.shape[0]
    groups = cols // GROUP
    quads, pairs = groups // 4 * 4 * GROUP, groups % 4 // 2 * 2 * GROUP
    lanes = packed[:, : quads // 2].reshape(rows, -1, GROUP, 2)
    nib = torch.stack([lanes[..., 0] & 0x0F, lanes[..., 0] >> 4, lanes[..., 1] & 0x0F, lanes[..., 1] >> 4], dim=2)
    parts = [nib.reshape(rows, -1)]
    for start, stop, width in ((quads, quads + pairs, GROUP), (quads + pairs, cols, GROUP // 2)):
        if stop > start:
            b = packed[:, start // 2 : stop // 2].reshape(rows, 1, width)
            parts.append(torch.cat([b & 0x0F, b >> 4], dim=1).reshape(rows, -1))
    return torch.cat(parts, dim=1)


class NativeQuantLinear(QuantizedLinear):
    def __init__(self, affine: GroupAffine, qtype: GGMLQuantizationType, bias: torch.Tensor | None, kernels) -> None:
        rows, cols = affine.q.shape
        super().__init__(cols, rows, bias)
        assert affine.group == GROUP and affine.bits <= 8, (affine.group, affine.bits)
        self.qtype = qtype
        self.offset, self.bits = affine.offset, affine.bits
        self.width = 4 if affine.bits <= 4 else 8  # bits per stored code
        self._kernels = kernels
        self.register_buffer("codes", pack_nibbles(affine.q) if self.width == 4 else affine.q.contiguous())
        self.register_buffer("scale", exact_half(affine.scale))
        zero = None if affine.bias is None else affine.bias.to(self.scale.dtype)
        if zero is not None and not torch.equal(zero.float(), affine.bias):
            self.scale = affine.scale.float()  # both float32 when either needs it: the kernel takes one dtype
            zero = affine.bias.float()
        self.register_buffer("zero", zero)
        self._bind()

    @classmethod
    def from_gguf_blocks(
        cls, raw: torch.Tensor, qtype: GGMLQuantizationType, shape: tuple[int, ...], bias: torch.Tensor | None, kernels
    ) -> NativeQuantLinear:
        return cls(gguf_to_affine(raw, qtype, shape), GGMLQuantizationType(qtype), bias, kernels)

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self._bind()
        return module

    def _bind(self) -> None:
        # The kernel's arguments as plain attributes: a decode step calls this layer ~120 times, and each buffer
        # read through nn.Module.__getattr__ costs about as much as the kernel call itself on small matrices.
        self._args = (self.codes, self.scale, self.zero, self.width, float(self.offset))
        self._bias = self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16:
            return self._reference(x)
        if x.dim() != 2:
            return self.forward(x.reshape(-1, self.in_features)).view(*x.shape[:-1], self.out_features)
        if x.shape[0] >= DENSE_MIN_ROWS:
            return F.linear(x, self.dense_weight(), self._bias)
        y = self._kernels.qmatmul(x, *self._args)
        return y if self._bias is None else y + self._bias

    def dense_weight(self) -> torch.Tensor:
        """The weight in bf16 (each element rounded once from its exact value): for large batches of rows."""
        return self._kernels.qdequantize(*self._args, self.in_features)

    def _affine(self, ids: torch.Tensor | slice) -> GroupAffine:
        codes = self.codes[ids]
        q = unpack_nibbles(codes, self.in_features) if self.width == 4 else codes
        zero = None if self.zero is None else self.zero[ids].float()
        return GroupAffine(q, self.scale[ids].float(), zero, self.offset, GROUP, self.bits)

    def dequantize(self) -> torch.Tensor:
        return self._affine(slice(None)).dequantize()

    def dequantize_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self._affine(ids).dequantize()
