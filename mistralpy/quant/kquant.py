"""Q4_K quantization in torch, following ggml's `quantize_row_q4_K_ref` (`make_qkx2_quants` scale search).

Sums run element by element in float32 in ggml's order, and rounding is ggml's `nearest_int`, so blocks are
bit-identical to ggml's C reference (tests compare with ggml's blocks committed under tests/data/).
"""

from __future__ import annotations

import numpy as np
import torch

QK_K = 256
_NMAX = 15
_RMIN, _RDELTA, _NSTEP = np.float32(-1.0), np.float32(0.1), 20
_MAGIC = 12582912.0  # 1.5 * 2**23


def _nearest_int(t: torch.Tensor) -> torch.Tensor:
    """ggml's `nearest_int`: half-to-even through the bits of the float32 t + 1.5 * 2**23. Equal to torch.round for
    |t| < 2**22; beyond that (inf, NaN: weights near float32's or float16's limits) it gives what ggml's release
    builds give, e.g. -2**22 for inf, where torch.round(...).clamp would give the maximum code."""
    return (((t + _MAGIC).view(torch.int32) & 0x7FFFFF) - 0x400000).float()


def _rdiv(c: float, t: torch.Tensor) -> torch.Tensor:
    """c / t rounded once (torch's `c / t` is `c * (1 / t)`, rounded twice)."""
    return torch.full_like(t, c) / t


def _seq_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over dim 0 one row at a time, the order of ggml's loops (t is (32, n): each row contiguous)."""
    acc = t[0].clone()
    for row in t[1:]:
        acc += row
    return acc


def _make_qkx2_quants(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, w: (32, n), one group per column -> codes (32, n) float, scale (n,), min (n,): x ~ scale * code - min."""
    lo = lo0 = x.min(dim=0).values.clamp(max=0)
    hi = x.max(dim=0).values
    sum_w, sum_x = _seq_sum(w), _seq_sum(w * x)
    span = hi - lo
    flat = span <= 0
    span = torch.where(flat, torch.ones_like(span), span)
    iscale = _rdiv(_NMAX, span)
    scale = _rdiv(1, iscale)
    codes = _nearest_int(iscale * (x - lo)).clamp(0, _NMAX)
    best = _seq_sum(w * (scale * codes + lo - x) ** 2)
    for step in range(_NSTEP + 1):
        # ggml divides by max - min with the best min so far, not the initial one
        iscale = _rdiv(float(_RMIN + _RDELTA * np.float32(step) + _NMAX), torch.where(flat, span, hi - lo))
        cand = _nearest_int(iscale * (x - lo)).clamp(0, _NMAX)
        wl = w * cand
        sum_l, sum_l2, sum_xl = _seq_sum(wl), _seq_sum(wl * cand), _seq_sum(wl * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = this_min > 0
        this_scale = torch.where(positive, sum_xl / sum_l2, this_scale)
        this_min = torch.where(positive, torch.zeros_like(this_min), this_min)
        err = _seq_sum(w * (this_scale * cand + this_min - x) ** 2)
        better = (det > 0) & (err < best)
        codes = torch.where(better, cand, codes)
        best = torch.where(better, err, best)
        scale = torch.where(better, this_scale, scale)
        lo = torch.where(better, this_min, lo)
    codes = torch.where(flat, torch.zeros_like(codes), codes)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    return codes, scale, -torch.where(flat, lo0, lo)


def _pack_scales(ls: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """8 six-bit scales and mins (n, 8) -> the 12 packed bytes of a Q4_K block."""
    low = torch.cat([ls[:, :4] | ((ls[:, 4:] >> 4) << 6), lm[:, :4] | ((lm[:, 4:] >> 4) << 6)], dim=-1)
    high = (ls[:, 4:] & 0x0F) | ((lm[:, 4:] & 0x0F) << 4)
    return torch.cat([low, high], dim=-1)


def quantize_q4_k(x: torch.Tensor) -> torch.Tensor:
    """(n, 256) float32 -> (n, 144) uint8 Q4_K blocks."""
    n = x.shape[0]
    sub = x.reshape(-1, 32).t().contiguous()  # (32, groups): ggml's per-group loops become row-by-row sums
    av_x = torch.sqrt((_seq_sum(sub * sub) / 32).double()).float()  # float32 torch.sqrt is not correctly rounded
    codes, scales, mins = _make_qkx2_quants(sub, av_x + sub.abs())
    codes = codes.t()
    scales, mins = scales.view(n, 8), mins.view(n, 8)
    # ggml starts these maxima at +0: "+ 0.0" turns a -0.0 (the min of an all-zero group) into +0.0 as it does
    max_scale = scales.max(dim=-1, keepdim=True).values.clamp(min=0) + 0.0
    max_min = mins.max(dim=-1, keepdim=True).values.clamp(min=0) + 0.0
    inv_scale = torch.where(max_scale > 0, _rdiv(63, max_scale), torch.zeros_like(max_scale))
    inv_min = torch.where(max_min > 0, _rdiv(63, max_min), torch.zeros_like(max_min))
    # ggml stores nearest_int's int in a uint8_t (mod 256) before taking MIN(63, .)
    ls = (_nearest_int(inv_scale * scales).int() & 0xFF).clamp(max=63).to(torch.uint8)
    lm = (_nearest_int(inv_min * mins).int() & 0xFF).clamp(max=63).to(torch.uint8)
    d = (max_scale / 63).half()
    dmin = (max_min / 63).half()
    # requantize every weight against the rounded block scales; groups whose scale rounds to 0 keep their codes
    dl = (d.float() * ls.float()).unsqueeze(-1)
    ml = (dmin.float() * lm.float()).unsqueeze(-1)
    xs = x.view(n, 8, 32)
    requant = _nearest_int((xs + ml) / torch.where(dl == 0, torch.ones_like(dl), dl)).clamp(0, _NMAX)
    codes = torch.where(dl == 0, codes.reshape(n, 8, 32), requant).to(torch.uint8).view(n, 4, 2, 32)
    qs = (codes[:, :, 0] | (codes[:, :, 1] << 4)).reshape(n, 128)
    head = torch.cat([d.view(torch.uint8), dmin.view(torch.uint8)], dim=-1).reshape(n, 4)
    return torch.cat([head, _pack_scales(ls, lm), qs], dim=-1)
