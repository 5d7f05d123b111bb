"""Q2_K, Q3_K, Q5_K and Q6_K quantization in torch by a direct scale choice (gguf-py has no quantizer for these,
and this is not ggml's scale search): each sub-block's scale (and offset) from its own range, the super-block's f16
scale rounded up so that every sub-block scale, rounded up to its integer code, still covers the sub-block; each
weight then rounds to the nearest code of its effective scale. A weight's error is at most half its sub-block's
effective step plus, for the affine types, the offset's rounding (tests/test_lora_merge_types.py bounds it against a
float64 reference). Used where merged LoRA weights are re-quantized; Q4_K keeps ggml's search (kquant.py)."""

from __future__ import annotations

import torch

from .kquant import _pack_scales


def _f16_up(t: torch.Tensor) -> torch.Tensor:
    """The smallest f16 >= t (t >= 0): a stored scale never falls short of the one it stands for."""
    h = t.half()
    return torch.where(h.float() < t, (h.view(torch.int16) + 1).view(torch.float16), h)


def _codes(x: torch.Tensor, step: torch.Tensor, offset: torch.Tensor, top: int) -> torch.Tensor:
    safe = torch.where(step == 0, torch.ones_like(step), step)
    return torch.round((x + offset) / safe).clamp(0, top).to(torch.uint8)


def _pack_nibbles(codes: torch.Tensor, group: int) -> torch.Tensor:
    """The inverse of gguf_dequant._nibbles: runs of 2 * group codes -> group bytes (low nibbles, then high)."""
    c = codes.reshape(codes.shape[0], -1, 2, group)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(codes.shape[0], -1)


def _pack_bits(codes: torch.Tensor, width: int, group: int) -> torch.Tensor:
    """The inverse of gguf_dequant._bits: runs of 8 // width * group codes -> group bytes, lowest bits first."""
    shifts = torch.arange(0, 8, width, dtype=torch.int32).reshape(1, 1, -1, 1)
    c = codes.to(torch.int32).reshape(codes.shape[0], -1, 8 // width, group)
    return (c << shifts).sum(2).to(torch.uint8).reshape(codes.shape[0], -1)


def _symmetric(x: torch.Tensor, subs: int, half: int, scale_top: int):
    """Codes 0 .. 2 * half - 1 meaning q - half, per sub-block scale codes 0 .. scale_top against one f16 d."""
    n = x.shape[0]
    xs = x.view(n, subs, -1)
    scale = xs.abs().amax(-1) / (half - 0.5)  # |x| / scale <= half - 1/2: rounds within half a step
    d = _f16_up(scale.amax(-1, keepdim=True) / scale_top)
    sc = torch.ceil(scale / torch.where(d == 0, torch.ones_like(d), d.float())).clamp(0, scale_top)
    step = (d.float() * sc).unsqueeze(-1)
    return _codes(xs, step, half * step, 2 * half - 1).reshape(n, -1), sc.to(torch.uint8), d


def _affine(x: torch.Tensor, subs: int, top: int, code_top: int):
    """Codes 0 .. top of w = d * sc * q - dmin * m, sc and m codes 0 .. code_top (the offset -min(x, 0) >= 0)."""
    n = x.shape[0]
    xs = x.view(n, subs, -1)
    offset = -xs.amin(-1).clamp(max=0)
    scale = (xs.amax(-1) + offset) / (top + 0.5)  # the top code within half a step of the maximum
    d = _f16_up(scale.amax(-1, keepdim=True) / code_top)
    dmin = _f16_up(offset.amax(-1, keepdim=True) / code_top)
    sc = torch.ceil(scale / torch.where(d == 0, torch.ones_like(d), d.float())).clamp(0, code_top)
    m = torch.ceil(offset / torch.where(dmin == 0, torch.ones_like(dmin), dmin.float())).clamp(0, code_top)
    step, shift = (d.float() * sc).unsqueeze(-1), (dmin.float() * m).unsqueeze(-1)
    return _codes(xs, step, shift, top).reshape(n, -1), sc.to(torch.uint8), m.to(torch.uint8), d, dmin


def _bytes(*halves: torch.Tensor) -> torch.Tensor:
    return torch.cat([h.view(torch.uint8) for h in halves], dim=-1)


def quantize_q6_k(x: torch.Tensor) -> torch.Tensor:
    """(n, 256) float32 -> (n, 210) uint8: ql, qh, 16 int8 scales, f16 d; w = d * sc * (q - 32)."""
    q, sc, d = _symmetric(x, 16, 32, 127)
    ql, qh = _pack_nibbles(q & 0x0F, 64), _pack_bits(q >> 4, 2, 32)
    return torch.cat([ql, qh, sc, _bytes(d)], dim=-1)


def quantize_q3_k(x: torch.Tensor) -> torch.Tensor:
    """(n, 256) float32 -> (n, 110) uint8: hmask (the high bit), qs, 16 six-bit scales (stored + 32), f16 d;
    w = d * (s - 32) * (q - 4)."""
    q, sc, d = _symmetric(x, 16, 4, 31)
    s = sc + 32
    scales = torch.cat([_pack_bits(s & 0x0F, 4, 8), _pack_bits(s >> 4, 2, 4)], dim=-1)
    return torch.cat([_pack_bits(q >> 2, 1, 32), _pack_bits(q & 3, 2, 32), scales, _bytes(d)], dim=-1)


def quantize_q2_k(x: torch.Tensor) -> torch.Tensor:
    """(n, 256) float32 -> (n, 84) uint8: 16 bytes of 4-bit scale | min << 4, qs, f16 d and dmin."""
    q, sc, m, d, dmin = _affine(x, 16, 3, 15)
    return torch.cat([sc | (m << 4), _pack_bits(q, 2, 32), _bytes(d, dmin)], dim=-1)


def quantize_q5_k(x: torch.Tensor) -> torch.Tensor:
    """(n, 256) float32 -> (n, 176) uint8: f16 d and dmin, 8 six-bit scales and mins, qh, qs."""
    q, sc, m, d, dmin = _affine(x, 8, 31, 63)
    return torch.cat([_bytes(d, dmin), _pack_scales(sc, m), _pack_bits(q >> 4, 1, 32), _pack_nibbles(q & 15, 32)], -1)
