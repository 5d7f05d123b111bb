"""Q5_0 and Q5_1 quantization in torch, following gguf-py's `gguf.quants` arithmetic step for step (float32
throughout): blocks bit-identical to `gguf.quants.quantize`. Used where merged LoRA weights are re-quantized."""

from __future__ import annotations

import torch


def _f16_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.half().view(torch.uint8).reshape(t.shape[0], -1)


def _reciprocal(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), torch.ones_like(d) / d)


def _low_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) codes -> 16 bytes: the low nibble of element j in byte j's low half, of element j + 16 in its high."""
    return (q[:, :16] & 0x0F) | (q[:, 16:] << 4)


def _fifth_bits(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) codes -> 4 bytes: bit 4 of element i in byte i // 8, bit i % 8 (numpy's packbits, little order)."""
    bits = ((q >> 4) & 1).reshape(-1, 4, 8).to(torch.int32)
    return (bits << torch.arange(8, dtype=torch.int32)).sum(-1).to(torch.uint8)


def quantize_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    """(n, 32) float32 -> (n, 22) uint8: f16 d, the fifth bits, the low nibbles; w = d * (q - 16)."""
    imax = blocks.abs().argmax(dim=-1, keepdim=True)  # the first of equal maxima, as numpy's argmax
    d = blocks.gather(-1, imax) / -16
    q = torch.trunc(blocks * _reciprocal(d) + 16.5).to(torch.uint8).clamp(0, 31)
    return torch.cat([_f16_bytes(d), _fifth_bits(q), _low_nibbles(q)], dim=-1)


def quantize_q5_1(blocks: torch.Tensor) -> torch.Tensor:
    """(n, 32) float32 -> (n, 24) uint8: f16 d and m, the fifth bits, the low nibbles; w = d * q + m."""
    lo, hi = blocks.min(dim=-1, keepdim=True).values, blocks.max(dim=-1, keepdim=True).values
    d = (hi - lo) / 31
    q = torch.trunc((blocks - lo) * _reciprocal(d) + 0.5).to(torch.uint8).clamp(0, 31)
    return torch.cat([_f16_bytes(d), _f16_bytes(lo), _fifth_bits(q), _low_nibbles(q)], dim=-1)
