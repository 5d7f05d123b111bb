"""LoRALinear: a base linear (dense or quantized, untouched) plus the deltas of the adapters loaded in its slots.

Each slot holds one adapter's A (rank, in) and (scale * B)^T (rank, out) in the compute dtype; a fused linear's parts
(q, k, v of qkv_proj) sit side by side along the rank, each part's B in its own output columns. A step's tokens come
with their slots (`LoRAStep`, built once per step for every layer), and never cost a Python loop per request:
- few tokens (decode): one matmul of x against every active slot's A at once, the columns of other slots' ranks
  zeroed by the step's mask, one matmul against their B^T: Punica's gathered matmul with the gather as a mask;
- many tokens (prefill): rows grouped by slot, one gathered matmul pair per adapter (S-LoRA's segments).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

MASKED_MAX_TOKENS = 32  # up to here the masked form's extra work over inactive slots costs less than a loop


@dataclass
class LoRAStep:
    """A step's tokens by adapter slot: groups of (slot, its rows, or None where every row uses it); for a few tokens,
    the (tokens, slots) 0/1 mask of the masked form."""

    groups: list[tuple[int, torch.Tensor | None]]
    slots: torch.Tensor | None = None  # (T,) long, where the masked form runs
    num_slots: int = 0  # slots 0 .. num_slots - 1 cover every active one
    _masks: dict[torch.dtype, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_slots(cls, slots: list[int]) -> LoRAStep | None:
        """None where no token uses an adapter: the layers then cost what the base layers cost."""
        active = sorted(set(slots) - {-1})
        if not active:
            return None
        if len(active) == 1 and -1 not in slots:
            return cls([(active[0], None)])
        index = torch.tensor(slots)
        if len(slots) <= MASKED_MAX_TOKENS:
            return cls([], index, active[-1] + 1)
        return cls([(s, (index == s).nonzero().squeeze(1)) for s in active])

    def mask(self, dtype: torch.dtype, num_slots: int) -> torch.Tensor:
        """(T, num_slots, 1): 1 where the token uses the slot."""
        if dtype not in self._masks:
            onehot = self.slots.unsqueeze(1) == torch.arange(num_slots).unsqueeze(0)
            self._masks[dtype] = onehot.to(dtype).unsqueeze(2)
        return self._masks[dtype]


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
        # A^T as (in, slot, rank) and (scale * B)^T as (slot, rank, out): both matmuls of the masked form read a
        # contiguous right operand (oneDNN reorders a transposed one on every call)
        self.register_buffer("lora_at", torch.zeros(self.in_features, max_loras, max_rank, dtype=dtype), False)
        self.register_buffer("lora_bt", torch.zeros(max_loras, max_rank, self.out_features, dtype=dtype), False)
        self.ranks = [0] * max_loras  # a slot's rank in this layer (0: its adapter does not target this layer)

    def set_slot(self, slot: int, parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        """The slot's adapter here: parts of (first output row, A (r, in), scale * B (rows, r)), float32."""
        self.clear_slot(slot)
        at, bt = self.lora_at[:, slot], self.lora_bt[slot]
        rank = 0
        for row, part_a, part_b in parts:
            r = part_a.shape[0]
            at[:, rank : rank + r] = part_a.T.to(at.dtype)
            bt[rank : rank + r, row : row + part_b.shape[0]] = part_b.T.to(bt.dtype)
            rank += r
        self.ranks[slot] = rank

    def clear_slot(self, slot: int) -> None:
        self.lora_at[:, slot].zero_()  # zeros: the masked form multiplies every slot's rows
        self.lora_bt[slot].zero_()
        self.ranks[slot] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        step = self.state.step
        if step is None:
            return y
        if step.slots is not None:
            return self._masked(x, y, step)
        for slot, rows in step.groups:
            r = self.ranks[slot]
            if r == 0:
                continue
            at, bt = self.lora_at[:, slot, :r], self.lora_bt[slot, :r]
            if rows is None:
                y.add_((x @ at) @ bt)
            else:
                y.index_add_(0, rows, (x.index_select(0, rows) @ at) @ bt)
        return y

    def _masked(self, x: torch.Tensor, y: torch.Tensor, step: LoRAStep) -> torch.Tensor:
        if not any(self.ranks[: step.num_slots]):
            return y
        # every slot's full rank room (zeros past its rank, and in empty slots): views of the buffers, never a copy
        slots = len(self.ranks)
        h = (x @ self.lora_at.view(self.in_features, -1)).view(x.shape[0], slots, self.max_rank)
        h = h * step.mask(x.dtype, slots)
        return y.add_(h.view(x.shape[0], -1) @ self.lora_bt.view(slots * self.max_rank, -1))

    def extra_repr(self) -> str:
        return f"slots={len(self.ranks)}, max_rank={self.max_rank}"
