"""Rotary position embedding (the half-split "neox" layout of Hugging Face checkpoints), with linear, Llama-3 and
LongRoPE (Phi-3) scaling.

With `rotary_dim` < head_dim (partial rotary, Phi-2) only the first `rotary_dim` features of each head rotate.

LongRoPE divides the frequencies by per-frequency factors: `short_factor` for sequences within the original context
(`original_max_position_embeddings`), `long_factor` for longer ones, and scales cos/sin by an attention factor. Like
transformers, the choice is made per sequence by its length: the cos/sin tables hold the short-factor rows of the
original context, then the long-factor rows of every position, and `rows()` picks a token's row from the length of
its sequence."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError
from .native import NativeLayer

_LONGROPE = ("longrope", "su")  # "su" is LongRoPE's name in early Phi-3 configs
INITIAL_ROWS = 4096  # positions whose cos/sin a model builds at load; more as its steps reach them


def _factor(scaling: dict[str, Any], kind: str) -> float:
    factor = scaling.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < math.inf:
        raise UnsupportedArchitectureError(f"{kind} rope scaling needs a positive factor, got {factor!r}")
    return factor


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    factor = _factor(scaling, "llama3")
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_len = scaling.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(is_medium, smoothed, scaled)


def rope_type(scaling: dict[str, Any] | None) -> str:
    return (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))


def _longrope_factors(scaling: dict[str, Any], key: str, num_freqs: int) -> torch.Tensor:
    factors = scaling.get(key)
    if factors is None or len(factors) != num_freqs:
        found = "none" if factors is None else f"{len(factors)} values"
        raise UnsupportedArchitectureError(f"longrope scaling needs {key} with {num_freqs} values, found {found}")
    return torch.tensor(factors, dtype=torch.float32)


def compute_inv_freq(
    head_dim: int,
    theta: float,
    scaling: dict[str, Any] | None,
    freq_factors: list[float] | None = None,
    long_context: bool = False,
) -> torch.Tensor:
    """`long_context` picks LongRoPE's long factors (for sequences longer than the original context)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if freq_factors is not None:  # GGUF stores Llama-3 scaling as precomputed per-frequency divisors
        return inv_freq / torch.tensor(freq_factors, dtype=torch.float32)
    kind = rope_type(scaling)
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / _factor(scaling, kind)
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    if kind in _LONGROPE:
        key = "long_factor" if long_context else "short_factor"
        return inv_freq / _longrope_factors(scaling, key, len(inv_freq))
    raise UnsupportedArchitectureError(f"unsupported rope scaling type: {kind!r} (supported: linear, llama3, longrope)")


def longrope_original_length(scaling: dict[str, Any]) -> int:
    original = scaling.get("original_max_position_embeddings")
    if original is None:
        raise UnsupportedArchitectureError("longrope scaling needs original_max_position_embeddings")
    return int(original)


def attention_factor(scaling: dict[str, Any] | None, max_positions: int) -> float:
    """The factor cos and sin are scaled by: LongRoPE's given attention_factor, or the one its paper derives from
    the context extension (`factor`, else max_positions / original length); 1 for the other types."""
    if rope_type(scaling) not in _LONGROPE:
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    original = longrope_original_length(scaling)
    factor = scaling.get("factor") or max_positions / original
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))


class RotaryEmbedding(nn.Module, NativeLayer):
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
        # LongRoPE: the row where the long-factor table starts (= the original context length); None otherwise
        self.long_rows_start = longrope_original_length(scaling) if rope_type(scaling) in _LONGROPE else None
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None
        self._built, self._device = 0, "cpu"  # positions the tables hold (past the short rows, under LongRoPE)
        self._memo: tuple | None = None  # (positions, dtype, cos rows, sin rows) of the current step
        self._reserved = False  # the tables hold every position a step may use: steps never grow them (reserve)

    def build_cache(self, device: torch.device | str = "cpu") -> None:
        """Precompute cos/sin for the first INITIAL_ROWS positions; called after the model leaves the meta device.
        The tables grow (doubling) when a step reaches past them, up to max_positions: a model file may declare a
        context of millions of positions, which costs nothing until they are used. Rows are the same either way."""
        self._device = device
        self._build(min(self.max_positions, INITIAL_ROWS))

    def _build(self, num_positions: int) -> None:
        if self.long_rows_start is None:
            freqs = self._freqs(num_positions, long_context=False, device=self._device)
        else:
            short = self._freqs(self.long_rows_start, long_context=False, device=self._device)
            freqs = torch.cat((short, self._freqs(num_positions, long_context=True, device=self._device)))
        scale = attention_factor(self.scaling, self.max_positions)
        self.cos, self.sin = freqs.cos() * scale, freqs.sin() * scale
        self._built, self._memo = num_positions, None

    def _cover(self, rows: torch.Tensor) -> None:
        """Grow the tables to hold `rows` (positions past max_positions stay out of range)."""
        if self._reserved:
            return
        offset = self.long_rows_start or 0
        needed = int(rows.max()) + 1 - offset if rows.numel() else 0
        if needed > self._built and self._built < self.max_positions:
            self._build(min(self.max_positions, max(needed, 2 * self._built)))

    def reserve(self, num_positions: int) -> None:
        """The tables grown now to `num_positions` rows, and never by a step: growing reads the step's largest
        position on the host, a sync a captured CUDA graph cannot hold (engine/graph_runner.py)."""
        self._cover(torch.tensor([min(num_positions, self.max_positions) - 1]))
        self._reserved = True

    def _freqs(self, num_positions: int, long_context: bool, device: torch.device | str) -> torch.Tensor:
        inv_freq = compute_inv_freq(self.rotary_dim, self.theta, self.scaling, self.freq_factors, long_context)
        return torch.outer(torch.arange(num_positions, device=device, dtype=torch.float32), inv_freq.to(device))

    def table_of(self, prompt_len: int) -> int | None:
        """1 when a request of this prompt length reads the long-factor rows throughout (LongRoPE), else None:
        equal tokens then have different K, so the prefix cache keeps the two apart (its keys' root covers this)."""
        return 1 if self.long_rows_start is not None and prompt_len > self.long_rows_start else None

    def rows(self, positions: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
        """The cos/sin rows of tokens at `positions` of sequences `seq_lens` long (one per token): the positions
        themselves, or under LongRoPE the long-factor rows for tokens of sequences longer than the original context."""
        if self.long_rows_start is None:
            return positions
        return torch.where(seq_lens > self.long_rows_start, positions + self.long_rows_start, positions)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # Every layer of a step passes the same positions tensor: look its rows up once per step, not per layer.
        memo = self._memo
        if memo is None or memo[0] is not positions or memo[1] != dtype:
            self._cover(positions)
            cos, sin = self.cos[positions].unsqueeze(1).to(dtype), self.sin[positions].unsqueeze(1).to(dtype)
            memo = self._memo = (positions, dtype, cos, sin)
        return memo[2], memo[3]

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (T, Hq, D), k: (T, Hkv, D) -> rotated copies. `positions` index the cos/sin rows (see `rows`)."""
        cos, sin = self.cos_sin(positions, q.dtype)
        if self.rotary_dim == self.head_dim:
            if self.native is not None and q.dtype == torch.bfloat16:
                return tuple(self.native.rotary(q, k, cos, sin))
            return _rotate(q, cos, sin), _rotate(k, cos, sin)
        r = self.rotary_dim
        return (
            torch.cat((_rotate(q[..., :r], cos, sin), q[..., r:]), dim=-1),
            torch.cat((_rotate(k[..., :r], cos, sin), k[..., r:]), dim=-1),
        )


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
