"""LoRALinear: a base linear (dense or quantized, untouched) plus the deltas of the adapters loaded in its slots.

Each slot holds one adapter's A (rank, in) and scale * B (out, rank) in the compute dtype; a fused linear's parts
(q, k, v of qkv_proj) sit side by side along the rank, with B's rows of each part in its own output rows. A step's
tokens come grouped by slot (`LoRAStep`, built once per step for every layer); each group is one gathered matmul pair,
Punica/S-LoRA's segment computation: the Python loop runs over the step's adapters, never over its requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LoRAStep:
    """A step's adapter groups: (slot, the token rows that use it, or None where every row does)."""

    groups: list[tuple[int, torch.Tensor | None]]

    @classmethod
    def from_slots(cls, slots: list[int]) -> LoRAStep | None:
        """None where no token uses an adapter: the layers then cost what the base layers cost."""
        active = sorted(set(slots) - {-1})
        if not active:
            return None
        if len(active) == 1 and -1 not in slots:
            return cls([(active[0], None)])
        index = torch.tensor(slots)
        return cls([(s, (index == s).nonzero().squeeze(1)) for s in active])


class LoRAState:
    """The step the LoRA layers of one model compute: set by the model runner before the forward, cleared after."""

    def __init__(self) -> None:
        self.step: LoRAStep | None = None


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Module, max_loras: int, max_rank: int, dtype: torch.dtype, state: LoRAState) -> None:
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.max_rank, self.state = max_rank, state
        self.register_buffer("lora_a", torch.zeros(max_loras, max_rank, self.in_features, dtype=dtype), False)
        self.register_buffer("lora_b", torch.zeros(max_loras, self.out_features, max_rank, dtype=dtype), False)
        self.ranks = [0] * max_loras  # a slot's rank in this layer (0: its adapter does not target this layer)

    def set_slot(self, slot: int, parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        """The slot's adapter here: parts of (first output row, A (r, in), scale * B (rows, r)), float32."""
        a, b = self.lora_a[slot], self.lora_b[slot]
        a.zero_()
        b.zero_()
        rank = 0
        for row, part_a, part_b in parts:
            r = part_a.shape[0]
            a[rank : rank + r] = part_a.to(a.dtype)
            b[row : row + part_b.shape[0], rank : rank + r] = part_b.to(b.dtype)
            rank += r
        self.ranks[slot] = rank

    def clear_slot(self, slot: int) -> None:
        self.ranks[slot] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        step = self.state.step
        if step is None:
            return y
        for slot, rows in step.groups:
            r = self.ranks[slot]
            if r == 0:
                continue
            a, b = self.lora_a[slot, :r], self.lora_b[slot, :, :r]
            if rows is None:
                y.add_((x @ a.T) @ b.T)
            else:
                y.index_add_(0, rows, (x.index_select(0, rows) @ a.T) @ b.T)
        return y

    def extra_repr(self) -> str:
        return f"slots={len(self.ranks)}, max_rank={self.max_rank}"
