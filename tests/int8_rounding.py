"""How far attention over an int8 KV cache may be from float64 attention, from int8 rounding alone.

q (should attention quantize it per row, as llama.cpp does for a q8_0 cache), K and V may each be off by up to half an
int8 step of their row (max|row| / 127). Such rounding errors of unrelated values are modelled as independent and
uniform; the standard deviation each output gets from them is measured by drawing SAMPLES sets of them in float64, and
an output may be off by Z of its deviations. Of the ~10^6 logits test_kv_cache_int8 compares, the largest is 4.3
deviations off (q is not rounded today); the normal tail of 10^6 values reaches ~5, and SAMPLES estimates each
deviation within ~10%, so Z leaves room for any implementation that keeps to the model."""

from __future__ import annotations

import torch

SAMPLES, Z = 64, 8
BF16_ROUNDING = 2**-8  # relative: half a bf16 ulp


def half_step_errors(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Errors uniform within half an int8 step of each row of x (..., D), in float64."""
    step = x.abs().amax(-1, keepdim=True) / 127
    return (torch.rand(x.shape, dtype=torch.float64, generator=gen) - 0.5) * step


def decode_rows(rows: torch.Tensor) -> torch.Tensor:
    """int8 rows (D codes, then the float32 scale, as kv_cache.py documents them) in float64."""
    scale = rows[..., -4:].contiguous().view(torch.float32).double()
    return rows[..., :-4].view(torch.int8).double() * scale


def attention64(q, k, v, visible, scale, softcap, p_error=0.0, gen=None) -> torch.Tensor:
    """q: (..., T, Hq, D), k, v: (..., S, Hkv, D), visible: (T, S) -> (..., T, Hq, D), in float64. p_error: relative
    errors (uniform within it) of the probabilities, as bf16 kernels round them before P V."""
    group = q.shape[-2] // k.shape[-2]
    k, v = k.repeat_interleave(group, -2), v.repeat_interleave(group, -2)
    scores = torch.einsum("...thd,...shd->...hts", q, k) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    p = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    if p_error:
        p = p * (1 + 2 * p_error * (torch.rand(p.shape, dtype=torch.float64, generator=gen) - 0.5))
    return torch.einsum("...hts,...shd->...thd", p, v)


def expected_with_tolerance(q, k, v, visible, scale, softcap, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention in float64 over q and the cache's dequantized K/V, and how far an implementation may be from it."""
    q = q.double()
    exact = attention64(q, k, v, visible, scale, softcap)
    gen = torch.Generator().manual_seed(0)
    qs, ks, vs = (x + half_step_errors(x.expand(SAMPLES, *x.shape), gen) for x in (q, k, v))
    p_error = BF16_ROUNDING if bf16 else 0.0
    sigma = (attention64(qs, ks, vs, visible, scale, softcap, p_error, gen) - exact).pow(2).mean(0).sqrt()
    out_rounding = BF16_ROUNDING if bf16 else 2**-24
    return exact, Z * sigma + out_rounding * exact.abs() + 1e-6


def noisy_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, gen=None, **kwargs):
    """transformers' attention seam, float64, causal, with q, K and V given half-step errors when `gen` is passed."""
    if gen is not None:  # (B, H, S, D): rows are the last dimension, as in the cache
        query, key, value = (x + half_step_errors(x, gen) for x in (query, key, value))
    visible = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool).tril()
    out = attention64(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), visible, scaling, None)
    return out.contiguous(), None
