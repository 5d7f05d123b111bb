"""Fused element-wise kernels: RMSNorm (Gemma's 1 + w form too, with the residual add fused), rotary embedding in
the half-split layout, and the gated activations SiLU-and-mul / GELU(tanh)-and-mul. Each row's arithmetic is in
float32, as the torch layers do it."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, n_cols, eps, offset, HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        x += tl.load(res_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(res_ptr + row * n_cols + cols, x.to(res_ptr.dtype.element_ty), mask=mask)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(out_ptr + row * n_cols + cols, (x * inv * (w + offset)).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """x * rsqrt(mean(x²) + eps) * (offset + weight) over the last dimension (offset 1: Gemma's norm). With
    `residual`, x + residual is normalized and written back into `residual` (the next layer's input)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1]).contiguous()
    out = torch.empty_like(x)
    res = residual.view(-1, shape[-1]) if residual is not None else x
    if residual is not None and not residual.is_contiguous():
        raise ValueError("the residual must be contiguous: it is written in place")
    block = triton.next_power_of_2(shape[-1])
    _rms_norm_kernel[(x.shape[0],)](x, res, weight, out, shape[-1], eps, offset, residual is not None, block)
    return out.view(shape)


@triton.jit
def _rotary_kernel(x_ptr, cos_ptr, sin_ptr, n_heads, head_stride, tok_stride, HALF: tl.constexpr,
                   BLOCK: tl.constexpr):  # fmt: skip
    tok, head = tl.program_id(0), tl.program_id(1)
    i = tl.arange(0, BLOCK)
    mask = i < HALF
    base = x_ptr + tok * tok_stride + head * head_stride
    cos = tl.load(cos_ptr + tok * HALF + i, mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + tok * HALF + i, mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(base + i, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF + i, mask=mask, other=0.0).to(tl.float32)
    tl.store(base + i, (x1 * cos - x2 * sin).to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(base + HALF + i, (x2 * cos + x1 * sin).to(x_ptr.dtype.element_ty), mask=mask)


def rotary_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (T, H, D) in place by its tokens' cos/sin rows (T, R/2): the first R of each head's D values in the
    half-split ("neox") layout; the rest (partial rotary) left as they are."""
    tokens, heads, _ = x.shape
    half = cos.shape[-1]
    if x.stride(-1) != 1:
        raise ValueError("rotary_ needs heads whose values are contiguous")
    cos, sin = cos.reshape(tokens, half).contiguous(), sin.reshape(tokens, half).contiguous()
    block = triton.next_power_of_2(half)
    _rotary_kernel[(tokens, heads)](x, cos, sin, heads, x.stride(1), x.stride(0), half, block)
    return x


@triton.jit
def _gated_kernel(x_ptr, out_ptr, n, GELU: tl.constexpr, BLOCK: tl.constexpr):
    row, tile = tl.program_id(0), tl.program_id(1)
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    gate = tl.load(x_ptr + row * 2 * n + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * 2 * n + n + cols, mask=mask, other=0.0).to(tl.float32)
    if GELU:
        inner = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)
        act = 0.5 * gate * (1.0 + (2.0 / (1.0 + tl.exp(-2.0 * inner)) - 1.0))  # tanh(inner), from exp
    else:
        act = gate / (1.0 + tl.exp(-gate))
    tl.store(out_ptr + row * n + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def gated_activation(x: torch.Tensor, kind: str = "silu") -> torch.Tensor:
    """(..., 2N) [gate | up] -> act(gate) * up, with act SiLU (SwiGLU) or GELU's tanh form (GeGLU)."""
    if kind not in ("silu", "gelu_tanh"):
        raise ValueError(f"unknown gated activation {kind!r}")
    shape = x.shape
    n = shape[-1] // 2
    x = x.reshape(-1, 2 * n).contiguous()
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(n))
    _gated_kernel[(x.shape[0], triton.cdiv(n, block))](x, out, n, kind == "gelu_tanh", block)
    return out.view(*shape[:-1], n)
