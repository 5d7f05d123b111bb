"""In-situ quantization (ISQ): full-precision weights -> GGUF blocks, in torch, at load.

The legacy quantizers follow gguf-py's `gguf.quants` arithmetic step for step (float32 throughout), so their blocks
are bit-identical to `gguf.quants.quantize`; Q4_K follows ggml's `quantize_row_q4_K_ref` (gguf-py has none).
`quantize` also writes Q5_0 / Q5_1 (quantize_q5.py, as gguf-py) and Q2_K / Q3_K / Q5_K / Q6_K (kquant_direct.py: a
direct scale choice), for re-quantizing merged LoRA weights (lora/merge.py); ISQ offers ISQ_TYPES only.
"""

from __future__ import annotations

import torch

from ..errors import InvalidRequestError
from .ggml_types import GGML_QUANT_SIZES, GGMLQuantizationType
from .kquant import quantize_q4_k
from .kquant_direct import quantize_q2_k, quantize_q3_k, quantize_q5_k, quantize_q6_k
from .quantize_q5 import quantize_q5_0, quantize_q5_1

Q = GGMLQuantizationType
ISQ_TYPES: dict[str, GGMLQuantizationType] = {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q8_0": Q.Q8_0, "q4_k": Q.Q4_K}
# Rows whose length is not a multiple of a type's block size get this type instead (llama.cpp falls back too).
FALLBACK: dict[GGMLQuantizationType, GGMLQuantizationType] = {Q.Q4_K: Q.Q4_1}
_CHUNK_ELEMENTS = 1 << 22  # quantize a few MB of weights at a time to bound temporaries


def resolve_isq(name: str | None) -> GGMLQuantizationType | None:
    """The GGUF type for an ISQ name (case-insensitive); None for None."""
    if name is None:
        return None
    qtype = ISQ_TYPES.get(name.lower()) if isinstance(name, str) else None
    if qtype is None:
        raise InvalidRequestError(f"unknown quantization {name!r}; choose one of: {', '.join(ISQ_TYPES)}")
    return qtype


def isq_type_for(qtype: GGMLQuantizationType, cols: int) -> GGMLQuantizationType | None:
    """The type a row of `cols` weights is quantized to (the fallback when `qtype`'s blocks do not fit), or None."""
    for candidate in (qtype, FALLBACK.get(qtype)):
        if candidate is not None and cols % GGML_QUANT_SIZES[candidate][0] == 0:
            return candidate
    return None


def quantize(weight: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """A (rows, cols) weight -> its GGUF blocks as (rows, bytes_per_row) uint8."""
    rows, cols = weight.shape
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if cols % block_size:
        raise InvalidRequestError(f"{qtype.name} needs rows of a multiple of {block_size} weights, got {cols}")
    quantizer = _QUANTIZERS[qtype]
    step = max(1, _CHUNK_ELEMENTS // cols)
    out = [
        quantizer(weight[i : i + step].float().reshape(-1, block_size)).reshape(-1, cols // block_size * type_size)
        for i in range(0, rows, step)
    ]
    return torch.cat(out)


def _f16_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.half().view(torch.uint8).reshape(t.shape[0], -1)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) codes -> 16 bytes: element j in the low nibble of byte j, element j + 16 in the high one."""
    return q[:, :16] | (q[:, 16:] << 4)


def _reciprocal(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), torch.ones_like(d) / d)


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    imax = blocks.abs().argmax(dim=-1, keepdim=True)  # the first of equal maxima, as numpy's argmax
    d = blocks.gather(-1, imax) / -8
    q = torch.trunc(blocks * _reciprocal(d) + 8.5).to(torch.uint8).clamp(0, 15)
    return torch.cat([_f16_bytes(d), _pack_nibbles(q)], dim=-1)


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    lo, hi = blocks.min(dim=-1, keepdim=True).values, blocks.max(dim=-1, keepdim=True).values
    d = (hi - lo) / 15
    q = torch.trunc((blocks - lo) * _reciprocal(d) + 0.5).to(torch.uint8).clamp(0, 15)
    return torch.cat([_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)], dim=-1)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    a = x.abs()
    floored = torch.floor(a)
    return torch.sign(x) * (floored + torch.floor(2 * (a - floored)))


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = blocks.abs().max(dim=-1, keepdim=True).values / 127
    q = _round_half_away(blocks * _reciprocal(d)).to(torch.int8).view(torch.uint8)
    return torch.cat([_f16_bytes(d), q], dim=-1)


_QUANTIZERS = {Q.Q4_0: _q4_0, Q.Q4_1: _q4_1, Q.Q8_0: _q8_0, Q.Q4_K: quantize_q4_k}
_QUANTIZERS |= {Q.Q5_0: quantize_q5_0, Q.Q5_1: quantize_q5_1}
_QUANTIZERS |= {Q.Q2_K: quantize_q2_k, Q.Q3_K: quantize_q3_k, Q.Q5_K: quantize_q5_k, Q.Q6_K: quantize_q6_k}
QUANTIZABLE: frozenset[GGMLQuantizationType] = frozenset(_QUANTIZERS)  # every type `quantize` writes
