"""Dequantize GGUF/GGML tensor blocks to float32, vectorised in torch.

Each block decoder takes the raw blocks as a (n_blocks, type_size) uint8 tensor and returns (n_blocks, block_size)
float32. The arithmetic order mirrors ggml's reference (as written in gguf-py) so results match it bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from ..errors import ModelLoadError
from .ggml_types import GGML_QUANT_SIZES, QK_K, GGMLQuantizationType

Q = GGMLQuantizationType


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The f16 field at byte `start` of every block, as an (n, 1) float32 column."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def _shift(values: list[int], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8, device=device).reshape(shape)


def _nibbles(qs: torch.Tensor, group: int) -> torch.Tensor:
    """Split each run of `group` bytes into its low nibbles followed by its high nibbles."""
    n = qs.shape[0]
    out = qs.reshape(n, -1, 1, group) >> _shift([0, 4], (1, 1, 2, 1), qs.device)
    return (out & 0x0F).reshape(n, -1)


def _bits(packed: torch.Tensor, width: int, group: int) -> torch.Tensor:
    """Unpack `width`-bit fields: each run of `group` bytes yields 8 // width runs, lowest bits first."""
    n = packed.shape[0]
    shifts = _shift(list(range(0, 8, width)), (1, 1, 8 // width, 1), packed.device)
    out = packed.reshape(n, -1, 1, group) >> shifts
    return (out & ((1 << width) - 1)).reshape(n, -1)


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks, 0)
    q = _nibbles(blocks[:, 2:], 16).to(torch.int8) - 8
    return d * q.float()


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    return d * _nibbles(blocks[:, 4:], 16).float() + m


def _q5_high_bits(qh: torch.Tensor) -> torch.Tensor:
    """The 32 fifth bits of a Q5_0/Q5_1 block: bit i of one little-endian uint32, so byte i // 8, bit i % 8."""
    bits = qh.reshape(-1, 4, 1) >> _shift(list(range(8)), (1, 1, 8), qh.device)
    return (bits & 1).reshape(-1, 32)


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks, 0)
    q = _nibbles(blocks[:, 6:], 16) | (_q5_high_bits(blocks[:, 2:6]) << 4)
    return d * (q.to(torch.int8) - 16).float()


def _q5_1(blocks: torch.Tensor) -> torch.Tensor:
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    q = _nibbles(blocks[:, 8:], 16) | (_q5_high_bits(blocks[:, 4:8]) << 4)
    return d * q.float() + m


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks, 0)
    return blocks[:, 2:].contiguous().view(torch.int8).float() * d


def _q2_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    scales, qs = blocks[:, :16], blocks[:, 16:80]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    dl = (d * (scales & 0x0F).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    q = _bits(qs, 2, 32).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    hmask, qs, packed = blocks[:, :32], blocks[:, 32:96], blocks[:, 96:108]
    d = _f16(blocks, 108)
    # 16 six-bit scales: low 4 bits in bytes 0-7 (low nibbles then high nibbles), top 2 bits in bytes 8-11
    low = _bits(packed[:, :8], 4, 8)
    high = _bits(packed[:, 8:], 2, 4)
    scales = ((low | (high << 4)).to(torch.int8) - 32).float()
    dl = (d * scales).reshape(n, 16, 1)
    ql = _bits(qs, 2, 32).reshape(n, 16, 16).to(torch.int8)
    # the high bit is stored inverted: a set bit means no -4 offset
    qh = (_bits(hmask, 1, 32).reshape(n, 16, 16) ^ 1).to(torch.int8)
    return (dl * (ql - (qh << 2)).float()).reshape(n, QK_K)


def _k_scale_min(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and 8 six-bit mins packed in the 12 bytes of a Q4_K/Q5_K block."""
    d, m, md = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _k_affine(blocks: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k_scale_min(blocks[:, 4:16])
    dl = (d * sc.float()).reshape(n, 8, 1)
    ml = (dmin * mn.float()).reshape(n, 8, 1)
    return (dl * q.reshape(n, 8, 32).float() - ml).reshape(n, QK_K)


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    return _k_affine(blocks, _nibbles(blocks[:, 16:], 32))


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    qh = _bits(blocks[:, 16:48], 1, 32)
    return _k_affine(blocks, _nibbles(blocks[:, 48:], 32) | (qh << 4))


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    ql, qh, scales = blocks[:, :128], blocks[:, 128:192], blocks[:, 192:208]
    d = _f16(blocks, 208)
    dl = (d * scales.contiguous().view(torch.int8).float()).reshape(n, 16, 1)
    q = _nibbles(ql, 64) | (_bits(qh, 2, 32) << 4)
    return (dl * (q.to(torch.int8) - 32).reshape(n, 16, 16).float()).reshape(n, QK_K)


def _f32(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float32)


def _f16_type(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float16).float()


def _bf16(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.bfloat16).float()


_DECODERS: dict[GGMLQuantizationType, Callable[[torch.Tensor], torch.Tensor]] = {
    Q.F32: _f32,
    Q.F16: _f16_type,
    Q.BF16: _bf16,
    Q.Q4_0: _q4_0,
    Q.Q4_1: _q4_1,
    Q.Q5_0: _q5_0,
    Q.Q5_1: _q5_1,
    Q.Q8_0: _q8_0,
    Q.Q2_K: _q2_k,
    Q.Q3_K: _q3_k,
    Q.Q4_K: _q4_k,
    Q.Q5_K: _q5_k,
    Q.Q6_K: _q6_k,
}

SUPPORTED_TYPES: frozenset[GGMLQuantizationType] = frozenset(_DECODERS)


def _as_uint8(raw: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(raw, np.ndarray):
        if not raw.flags.c_contiguous:
            raw = np.ascontiguousarray(raw)
        with warnings.catch_warnings():
            # read-only memmaps are fine: nothing here writes to the input
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(raw)
    data = raw.contiguous().reshape(-1).view(torch.uint8)
    # views to wider dtypes need an aligned start; GGUF aligns tensors, but a caller's slice may not be
    return data.clone() if data.storage_offset() % 8 else data


def _type_name(qtype: int) -> str:
    try:
        return GGMLQuantizationType(qtype).name
    except ValueError:
        return f"type id {int(qtype)}"


def dequantize(raw: np.ndarray | torch.Tensor, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> torch.Tensor:
    """Decode the raw bytes of a GGUF tensor with torch shape `shape` into a float32 tensor of that shape.

    For F32 the result is a view of `raw` (no copy).
    """
    decoder = _DECODERS.get(qtype)
    if decoder is None:
        raise ModelLoadError(f"unsupported GGUF tensor type {_type_name(qtype)}")
    qtype = GGMLQuantizationType(qtype)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    shape = tuple(int(s) for s in shape)
    n_elements = math.prod(shape)
    if shape and shape[-1] % block_size:
        raise ModelLoadError(f"{qtype.name} row length {shape[-1]} is not a multiple of its block size {block_size}")
    data = _as_uint8(raw)
    n_bytes = n_elements // block_size * type_size
    if data.numel() != n_bytes:
        raise ModelLoadError(f"{qtype.name} tensor of shape {shape} needs {n_bytes} bytes, got {data.numel()}")
    if n_elements == 0:  # no blocks: the decoders' reshapes cannot infer a size
        return torch.zeros(shape)
    blocks = data.reshape(-1, type_size)
    return decoder(blocks).reshape(shape)
