"""The native quantized matmul's arithmetic (kernels/quant_matmul.cpp) spelled in torch, operation for operation.

Its results equal the kernel's bit for bit: the parity reference of the fast path. The kernel does not compute
dequantize-then-matmul up to rounding; it quantizes x per weight group (32 or 16) to int8 first (as llama.cpp does),
and a reference of anything else differs from it by that quantization, which greedy decoding turns into other tokens.
Slow (a float64 pass per group), for tests.

Per x row and group g: d = max|x| / 127, q = round(x / d) (x * (127 / max|x|), half to even), Q = sum q;
per weight row: S = sum codes * q (exact integers), z = a c + b (one rounding: fma); then, group after group,
acc = fma(z, d Q, acc), acc = fma(a d, S, acc). Each fma is emulated in float64: the product of two float32 values
is exact there, and the sum's rounding to float64 and then float32 differs from one rounding only in rare
double-rounding cases (none in the tests).
"""

from __future__ import annotations

import torch

from .affine import GroupAffine

_SUMS = 1 << 24  # integer sums (groups x rows x out_features) held at a time


def quantize_activations(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> int8 codes as float32 (M, K // group, group) and their scales d (M, K // group), as the kernel
    forms them."""
    groups = x.float().unflatten(-1, (-1, group))
    amax = groups.abs().amax(-1)
    # tensor / tensor: torch turns `scalar / tensor` into a reciprocal times the scalar, which rounds differently
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0) / amax, torch.zeros_like(amax))
    return torch.round(groups * inv.unsqueeze(-1)), amax / torch.full_like(amax, 127.0)


def qmatmul_reference(x: torch.Tensor, weight: GroupAffine, float_out: bool = False) -> torch.Tensor:
    """x (M, K) bf16 or float32 times the weight transposed -> (M, N) in x's dtype (float32 with float_out), as the
    kernel computes it on every ISA level."""
    if weight.group not in (16, 32):
        raise ValueError(f"the kernel's groups are of 32 or 16 weights, not {weight.group}")
    rows, cols = weight.q.shape
    codes = weight.q.float().unflatten(-1, (-1, weight.group))
    a = weight.scale.double()
    z = _fma(a, float(weight.offset), torch.zeros_like(a) if weight.bias is None else weight.bias.double())
    step = max(1, _SUMS // (rows * cols // weight.group))
    parts = [_rows(x[i : i + step], codes, a, z) for i in range(0, x.shape[0], step)]
    out = torch.cat(parts) if parts else torch.empty(0, rows)
    return out if float_out else out.to(x.dtype)


def _rows(x: torch.Tensor, codes: torch.Tensor, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Rows of x against the weight's codes (N, groups, group) as float32, a and z = a c + b (N, groups) as float64."""
    q, d = quantize_activations(x, codes.shape[-1])
    dq = d * q.sum(-1)
    sums = torch.einsum("mgk,ngk->gmn", q, codes).double()  # integers below 2**24: exact in float32
    acc = torch.zeros(x.shape[0], codes.shape[0], dtype=torch.float64)
    for g in range(q.shape[1]):
        acc = _fma(z[:, g], dq[:, g : g + 1].double(), acc)
        ad = (a[:, g].float() * d[:, g : g + 1]).double()  # one float32 product, as the kernel's
        acc = _fma(ad, sums[g], acc)
    return acc.float()


def _fma(a: torch.Tensor | float, b: torch.Tensor | float, c: torch.Tensor) -> torch.Tensor:
    """float32 a * b + c, emulated in float64 (where the product of two float32 values is exact)."""
    return (c + a * b).float().double()
