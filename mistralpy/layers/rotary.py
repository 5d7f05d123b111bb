"""Rotary position embedding (the half-split "neox" layout of Hugging Face checkpoints), with Llama-3 scaling.

With `rotary_dim` < head_dim (partial rotary, Phi-2) only the first `rotary_dim` features of each head rotate."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_len = scaling.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(is_medium, smoothed, scaled)


def compute_inv_freq(
    head_dim: int, theta: float, scaling: dict[str, Any] | None, freq_factors: list[float] | None = None
) -> torch.Tensor:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if freq_factors is not None:  # GGUF stores Llama-3 scaling as precomputed per-frequency divisors
        return inv_freq / torch.tensor(freq_factors, dtype=torch.float32)
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    raise UnsupportedArchitectureError(f"unsupported rope scaling type: {rope_type!r} (supported: linear, llama3)")


class RotaryEmbedding(nn.Module):
    def __init__(
        self,
        head_dim: int,
        max_positions: int,
        theta: float,
        scaling: dict[str, Any] | None = None,
        freq_factors: list[float] | None = None,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim or head_dim
        self.max_positions = max_positions
        self.theta, self.scaling, self.freq_factors = theta, scaling, freq_factors
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None

    def build_cache(self, device: torch.device | str = "cpu") -> None:
        """Precompute cos/sin for every position; called after the model leaves the meta device."""
        inv_freq = compute_inv_freq(self.rotary_dim, self.theta, self.scaling, self.freq_factors).to(device)
        freqs = torch.outer(torch.arange(self.max_positions, device=device, dtype=torch.float32), inv_freq)
        self.cos, self.sin = freqs.cos(), freqs.sin()

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (T, Hq, D), k: (T, Hkv, D) -> rotated copies."""
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        if self.rotary_dim == self.head_dim:
            return _rotate(q, cos, sin), _rotate(k, cos, sin)
        r = self.rotary_dim
        return (
            torch.cat((_rotate(q[..., :r], cos, sin), q[..., r:]), dim=-1),
            torch.cat((_rotate(k[..., :r], cos, sin), k[..., r:]), dim=-1),
        )


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
