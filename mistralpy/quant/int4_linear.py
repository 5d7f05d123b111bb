"""Int4PackLinear: GGUF types with groups of 32 on torch's int4 kernel, exactly (no requantization).

The kernel's weight is (n - 8) * scale + zero per nibble n. A GGUF weight a * (q + c) + b with codes of up to 8 bits
is written in P = ceil(bits / 4) planes of balanced base-16 digits, q + c - t = sum_p 16**p * (n_p - 8), so that
    plane p: scale 16**p * a,   zero (a * t + b if p == 0 else 0).
Each group's integer shift t is the one that brings its zero closest to 0 (t ~ -b / a) among those that keep every
digit in [0, 16): the kernel's scales and zeros are rounded to bf16, and a small zero keeps that rounding as small
as the dense bf16 path's rounding of each weight. The kernel takes the planes side by side, a matrix of width
P * in_features (x is repeated to match). The exact a and b are kept for `dequantize()`.
Q4_0, Q4_1, Q4_K take one plane; Q5_0, Q5_1, Q5_K and Q8_0 take two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .affine import GroupAffine, exact_half, gguf_to_affine
from .ggml_types import GGMLQuantizationType
from .int4pack import ROW_BLOCK, int4_mm, pack_codes, unpack_codes, unpack_rows
from .quantized_linear import QuantizedLinear

Q = GGMLQuantizationType
GROUP = 32
INT4_TYPES: frozenset[GGMLQuantizationType] = frozenset({Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q5_0, Q.Q5_1, Q.Q5_K, Q.Q8_0})
# From this many rows of x per nibble plane on, dequantizing the weight to bf16 for one bf16 GEMM beats the int4
# kernel, whose cost grows linearly with the rows (measured on Zen 4: the crossover is ~110 rows for one plane).
DENSE_MIN_ROWS = 128
_PACK_ROWS = 64 * ROW_BLOCK


class Int4PackLinear(QuantizedLinear):
    def __init__(self, affine: GroupAffine, qtype: GGMLQuantizationType, bias: torch.Tensor | None) -> None:
        rows, cols = affine.q.shape
        super().__init__(cols, rows, bias)
        assert affine.group == GROUP, affine.group
        self.qtype = qtype
        self.offset, self.bits = affine.offset, affine.bits
        self.planes = -(-affine.bits // 4)
        self.register_buffer("scale", exact_half(affine.scale))
        self.register_buffer("zero", None if affine.bias is None else exact_half(affine.bias))
        t = self._shifts(slice(None))
        self._padded_rows = -(-rows // ROW_BLOCK) * ROW_BLOCK  # padding rows: zero weights, cut from the output
        packed = torch.empty(self._padded_rows, self.planes * cols // 2, dtype=torch.uint8)
        for start in range(0, rows, _PACK_ROWS):  # in slices of rows, to bound the int16 temporaries
            stop = min(start + _PACK_ROWS, rows)
            padded_stop = self._padded_rows if stop == rows else stop
            u = affine.q[start:stop].view(-1, cols // GROUP, GROUP).to(torch.int16)
            u = (u + (self._top() - t[start:stop]).unsqueeze(-1)).view(-1, cols)
            u = F.pad(u, (0, 0, 0, padded_stop - stop))
            nibbles = torch.cat([(u >> (4 * p)) & 0x0F for p in range(self.planes)], dim=1).to(torch.uint8)
            packed[start:padded_stop] = pack_codes(nibbles)
        self.register_buffer("packed", packed)
        self.register_buffer("scale_zeros", self._kernel_params(affine, t))

    @classmethod
    def from_gguf_blocks(
        cls, raw: torch.Tensor, qtype: GGMLQuantizationType, shape: tuple[int, ...], bias: torch.Tensor | None
    ) -> Int4PackLinear:
        return cls(gguf_to_affine(raw, qtype, shape), GGMLQuantizationType(qtype), bias)

    def _top(self) -> int:
        """c + 8 * sum_p 16**p: the largest shift t that keeps every digit of q + c - t + ... non-negative."""
        return self.offset + 8 * sum(16**p for p in range(self.planes))

    def _shifts(self, ids: torch.Tensor | slice) -> torch.Tensor:
        """Per-group shifts t of rows `ids`, (rows, groups) int16, recomputed from the exact a and b when decoding."""
        a = self.scale[ids].float()
        lowest = 2**self.bits - 16**self.planes + self._top()  # keeps the top digit below 16
        if self.zero is None:
            return torch.full(a.shape, min(max(0, lowest), self._top()), dtype=torch.int16)
        t = torch.round(-self.zero[ids].float() / torch.where(a == 0, torch.ones_like(a), a))
        return t.nan_to_num(0).clamp(lowest, self._top()).to(torch.int16)

    def _kernel_params(self, affine: GroupAffine, t: torch.Tensor) -> torch.Tensor:
        a = affine.scale
        zero = a * t.float()
        if affine.bias is not None:
            zero = zero + affine.bias
        scales = [a * 16**p for p in range(self.planes)]
        zeros = [zero] + [torch.zeros_like(a)] * (self.planes - 1)
        params = torch.stack([torch.cat(scales, dim=1), torch.cat(zeros, dim=1)], dim=-1)  # (rows, groups', 2)
        params = F.pad(params, (0, 0, 0, 0, 0, self._padded_rows - a.shape[0]))
        return params.transpose(0, 1).contiguous().to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # the kernel's float32 variant is scalar code: x rounded to bf16 is far faster
            return self(x.bfloat16()).float()
        if x.dtype != torch.bfloat16:
            return self._reference(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] >= DENSE_MIN_ROWS * self.planes:
            y = F.linear(x2, self.dense_weight(), None)
        else:
            xk = x2.contiguous() if self.planes == 1 else x2.repeat(1, self.planes)
            y = int4_mm(xk, self.packed, self.scale_zeros, GROUP)
            if self._padded_rows != self.out_features:
                y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def _codes(self, nib: torch.Tensor, ids: torch.Tensor | slice) -> torch.Tensor:
        """Nibble planes side by side (rows `ids`) -> the GGUF codes q = u - top + t."""
        parts = nib.split(self.in_features, dim=1)
        u = parts[0].to(torch.int16)
        for p, part in enumerate(parts[1:], start=1):
            u = u + (part.to(torch.int16) << (4 * p))
        q = u.view(u.shape[0], -1, GROUP) - self._top() + self._shifts(ids).unsqueeze(-1)
        return q.view(u.shape).to(torch.uint8)

    def _affine(self, codes: torch.Tensor, ids: torch.Tensor | slice) -> GroupAffine:
        zero = None if self.zero is None else self.zero[ids].float()
        return GroupAffine(codes, self.scale[ids].float(), zero, self.offset, GROUP, self.bits)

    def codes(self) -> torch.Tensor:
        """The GGUF codes, (out_features, in_features) uint8."""
        nib = unpack_codes(self.packed, self._padded_rows, self.planes * self.in_features)
        return self._codes(nib[: self.out_features], slice(None))

    def dequantize(self) -> torch.Tensor:
        return self._affine(self.codes(), slice(None)).dequantize()

    def dequantize_rows(self, ids: torch.Tensor) -> torch.Tensor:
        nib = unpack_rows(self.packed, self._padded_rows, self.planes * self.in_features, ids)
        return self._affine(self._codes(nib, ids), ids).dequantize()

    def dense_weight(self) -> torch.Tensor:
        """The weight as the kernel sees it (bf16 scales and zeros), in bf16: for large batches of rows."""
        nib = unpack_codes(self.packed, self._padded_rows, self.planes * self.in_features)
        rows, cols = nib.shape
        sz = self.scale_zeros.float().transpose(0, 1)  # (rows, groups', 2)
        w = (nib.view(rows, -1, GROUP).float() - 8) * sz[..., :1] + sz[..., 1:]
        w = w.view(rows, self.planes, -1).sum(dim=1) if self.planes > 1 else w.view(rows, cols)
        return w[: self.out_features].to(torch.bfloat16)
