"""GGUF block types as group-wise affine integer codes: w = a * (q + c) + b, bit-exact with the reference dequantizer.

Every quantized GGUF type stores, per group of 16 or 32 weights along a row, unsigned integer codes `q` and a scale
(and for some types a bias). Written this way the types share one shape that kernels can consume: `q` as nibble planes,
`a` and `b` as per-group scales and zeros. The float arithmetic order, (a * (q + c)) + b with q + c an exact integer,
is the one of ggml's reference decoders, so `GroupAffine.dequantize()` equals `gguf_dequant.dequantize` bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ModelLoadError
from .ggml_types import GGML_QUANT_SIZES, GGMLQuantizationType
from .gguf_dequant import _bits, _f16, _k_scale_min, _nibbles, _q5_high_bits

Q = GGMLQuantizationType


@dataclass
class GroupAffine:
    """Codes (rows, cols) uint8 in [0, 2**bits); scale and bias (rows, cols // group) float32; bias may be None."""

    q: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None
    offset: int  # c: an integer added to the codes before scaling
    group: int
    bits: int

    def dequantize(self) -> torch.Tensor:
        rows, cols = self.q.shape
        n_groups = cols // self.group
        v = (self.q.to(torch.int16) + self.offset).float().view(rows, n_groups, self.group)
        w = self.scale.unsqueeze(-1) * v
        if self.bias is not None:
            w = w + self.bias.unsqueeze(-1)
        return w.view(rows, cols)


def exact_half(t: torch.Tensor) -> torch.Tensor:
    """Per-group parameters as float16 when that is lossless (the legacy types' d and m are float16)."""
    half = t.half()
    return half if torch.equal(half.float(), t) else t


# Each decoder: blocks (n, type_size) uint8 -> (codes (n, block_size), scale (n, groups), bias or None).
Decoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _q4_0(b: torch.Tensor) -> Decoded:
    return _nibbles(b[:, 2:], 16), _f16(b, 0), None


def _q4_1(b: torch.Tensor) -> Decoded:
    return _nibbles(b[:, 4:], 16), _f16(b, 0), _f16(b, 2)


def _q5_0(b: torch.Tensor) -> Decoded:
    return _nibbles(b[:, 6:], 16) | (_q5_high_bits(b[:, 2:6]) << 4), _f16(b, 0), None


def _q5_1(b: torch.Tensor) -> Decoded:
    return _nibbles(b[:, 8:], 16) | (_q5_high_bits(b[:, 4:8]) << 4), _f16(b, 0), _f16(b, 2)


def _q8_0(b: torch.Tensor) -> Decoded:
    # int8 codes stored as unsigned (+128) so that every type has non-negative codes
    return b[:, 2:] ^ 0x80, _f16(b, 0), None


def _q2_k(b: torch.Tensor) -> Decoded:
    scales = b[:, :16]
    d, dmin = _f16(b, 80), _f16(b, 82)
    return _bits(b[:, 16:80], 2, 32), d * (scales & 0x0F).float(), -(dmin * (scales >> 4).float())


def _q3_k(b: torch.Tensor) -> Decoded:
    low, high = _bits(b[:, 96:104], 4, 8), _bits(b[:, 104:108], 2, 4)
    scale = _f16(b, 108) * ((low | (high << 4)).to(torch.int8) - 32).float()
    # value = low 2 bits - 4 unless the (inverted) high bit is set; as a code in [0, 8): value + 4
    return _bits(b[:, 32:96], 2, 32) | (_bits(b[:, :32], 1, 32) << 2), scale, None


def _k_affine(b: torch.Tensor, q: torch.Tensor) -> Decoded:
    sc, mn = _k_scale_min(b[:, 4:16])
    return q, _f16(b, 0) * sc.float(), -(_f16(b, 2) * mn.float())


def _q4_k(b: torch.Tensor) -> Decoded:
    return _k_affine(b, _nibbles(b[:, 16:], 32))


def _q5_k(b: torch.Tensor) -> Decoded:
    return _k_affine(b, _nibbles(b[:, 48:], 32) | (_bits(b[:, 16:48], 1, 32) << 4))


def _q6_k(b: torch.Tensor) -> Decoded:
    q = _nibbles(b[:, :128], 64) | (_bits(b[:, 128:192], 2, 32) << 4)
    return q, _f16(b, 208) * b[:, 192:208].contiguous().view(torch.int8).float(), None


# qtype -> (decoder, offset c, group size, bits per code)
_AFFINE: dict[GGMLQuantizationType, tuple[Callable[[torch.Tensor], Decoded], int, int, int]] = {
    Q.Q4_0: (_q4_0, -8, 32, 4),
    Q.Q4_1: (_q4_1, 0, 32, 4),
    Q.Q5_0: (_q5_0, -16, 32, 5),
    Q.Q5_1: (_q5_1, 0, 32, 5),
    Q.Q8_0: (_q8_0, -128, 32, 8),
    Q.Q2_K: (_q2_k, 0, 16, 2),
    Q.Q3_K: (_q3_k, -4, 16, 3),
    Q.Q4_K: (_q4_k, 0, 32, 4),
    Q.Q5_K: (_q5_k, 0, 32, 5),
    Q.Q6_K: (_q6_k, -32, 16, 6),
}
AFFINE_TYPES: frozenset[GGMLQuantizationType] = frozenset(_AFFINE)


_DECODE_ROWS = 4096


def gguf_to_affine(raw: torch.Tensor, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> GroupAffine:
    """The (rows, bytes_per_row) uint8 blocks of a 2-D quantized tensor of torch shape `shape` as a GroupAffine."""
    if qtype not in _AFFINE:
        raise ModelLoadError(f"{GGMLQuantizationType(qtype).name} has no group-affine form")
    decoder, offset, group, bits = _AFFINE[qtype]
    rows, cols = shape
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if cols % block_size or raw.numel() != rows * cols // block_size * type_size:
        raise ModelLoadError(f"{qtype.name} blocks do not fit a tensor of shape {tuple(shape)}")
    raw = raw.reshape(rows, -1)
    q = torch.empty(rows, cols, dtype=torch.uint8)
    scales, biases = [], []
    for start in range(0, rows, _DECODE_ROWS):  # in slices of rows: the decoders' temporaries are ~10x the blocks
        stop = min(start + _DECODE_ROWS, rows)
        blocks = raw[start:stop].contiguous().reshape(-1, type_size)
        if blocks.storage_offset() % 8:
            blocks = blocks.clone()  # the f16 fields are read through a dtype view, which needs an aligned start
        q_part, scale, bias = decoder(blocks)
        q[start:stop] = q_part.reshape(stop - start, cols)
        scales.append(scale.reshape(stop - start, cols // group))
        biases.append(None if bias is None else bias.reshape(stop - start, cols // group))
    bias = None if not biases or biases[0] is None else torch.cat(biases)
    scale = torch.cat(scales) if scales else torch.empty(0, cols // group)
    return GroupAffine(q, scale, bias, offset, group, bits)
