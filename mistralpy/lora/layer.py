"""LoRALinear: a base linear (dense or quantized, untouched) plus the deltas of the adapters loaded in its slots.

Each slot holds one adapter's A^T (in, rank) and (scale * B)^T (rank, out) in the compute dtype; a fused linear's parts
(q, k, v of qkv_proj) sit side by side along the rank, each part's B in its own output columns. A step's tokens come
with their slots (`LoRAStep`, built once per step for every layer), and never cost a Python loop per request:
- few tokens (decode): the tokens gathered by slot into equal groups (padded with a repeated row), one batched matmul
  pair over the slots (Punica's gathered matmul as torch.bmm), the real rows added back: each token costs only its
  own adapter's rank, up to the highest rank among the active slots (not the slots' full room);
- many tokens (prefill): rows grouped by slot, one gathered matmul pair per adapter (S-LoRA's segments).
With the native kernels bound and bf16 compute, a few tokens' deltas are the native `lora_add` instead (each token by
its own slot, in float32): the kernel the native DecoderStack runs for them too, so both paths agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LoRAAdapterError
from ..layers.native import NativeLayer

BATCHED_MAX_TOKENS = 64  # up to here one padded bmm over the slots beats a matmul pair per slot
MAX_PARTS = 3  # a fused projection's parts at most (q, k, v)


@dataclass
class LoRAStep:
    """A step's tokens by adapter slot: groups of (slot, its rows, or None where every row uses it); for a few tokens,
    the batched form's gather: slots 0 .. num_slots - 1, `rows` rows each (token indices, padding repeats token 0),
    and the real rows' flat positions (`keep`, None: no padding) with their token indices (`targets`)."""

    groups: list[tuple[int, torch.Tensor | None]]
    slots: torch.Tensor | None = None  # (tokens,) int64: each token's slot (-1: none), for the native lora_add
    gather: torch.Tensor | None = None
    num_slots: int = 0
    rows: int = 0
    keep: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    @classmethod
    def from_slots(cls, slots: list[int], device: torch.device | str = "cpu") -> LoRAStep | None:
        """None where no token uses an adapter: the layers then cost what the base layers cost. Index tensors on
        `device`, the model's."""
        active = sorted(set(slots) - {-1})
        if not active:
            return None
        index = torch.tensor(slots, dtype=torch.int64, device=device)
        if len(active) == 1 and -1 not in slots:
            return cls([(active[0], None)], index)
        if len(slots) > BATCHED_MAX_TOKENS:
            return cls([(s, (index == s).nonzero().squeeze(1)) for s in active], index)
        step = cls._batched(slots, active[-1] + 1, device)
        step.slots = index
        return step

    @classmethod
    def _batched(cls, slots: list[int], num_slots: int, device: torch.device | str) -> LoRAStep:
        by_slot: list[list[int]] = [[] for _ in range(num_slots)]
        for token, slot in enumerate(slots):
            if slot >= 0:
                by_slot[slot].append(token)
        rows = max(map(len, by_slot))
        gather, keep, targets = [], [], []
        for tokens in by_slot:
            keep.extend(range(len(gather), len(gather) + len(tokens)))
            targets.extend(tokens)
            gather.extend(tokens + [0] * (rows - len(tokens)))
        padded = len(keep) < len(gather)
        return cls(
            [],
            gather=torch.tensor(gather, device=device),
            num_slots=num_slots,
            rows=rows,
            keep=torch.tensor(keep, device=device) if padded else None,
            targets=torch.tensor(targets, device=device),
        )


class LoRAState:
    """The step the LoRA layers of one model compute: set by the model runner before the forward, cleared after."""

    def __init__(self) -> None:
        self.step: LoRAStep | None = None
        self.device = torch.device("cpu")  # the model's: its model runner sets it where it places the model


class LoRALinear(nn.Module, NativeLayer):
    def __init__(self, base: nn.Module, max_loras: int, max_rank: int, dtype: torch.dtype, state: LoRAState) -> None:
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.max_rank, self.state = max_rank, state
        # per slot A^T (in, rank) and (scale * B)^T (rank, out): each slot's matrices contiguous, as bmm reads them
        self.register_buffer("lora_a", torch.zeros(max_loras, self.in_features, max_rank, dtype=dtype), False)
        self.register_buffer("lora_b", torch.zeros(max_loras, max_rank, self.out_features, dtype=dtype), False)
        self.ranks = [0] * max_loras  # a slot's rank in this layer (0: its adapter does not target this layer)
        # per slot and part: its ranks k0 .. k1 and output columns c0 .. c1 (the native lora_add's spans)
        self.register_buffer("slot_spans", torch.zeros(max_loras, MAX_PARTS, 4, dtype=torch.int64), False)

    @property
    def stack_base(self) -> nn.Module:
        """What the native DecoderStack runs for this layer, on steps where no token uses an adapter."""
        return self.base

    def set_slot(self, slot: int, parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        """The slot's adapter here: parts of (first output row, A (r, in), scale * B (rows, r)), float32."""
        if len(parts) > MAX_PARTS:
            raise LoRAAdapterError(f"a projection fused from {len(parts)} parts (at most {MAX_PARTS} are supported)")
        self.clear_slot(slot)
        at, bt = self.lora_a[slot], self.lora_b[slot]
        rank = 0
        for q, (row, part_a, part_b) in enumerate(parts):
            r = part_a.shape[0]
            at[:, rank : rank + r] = part_a.T.to(at.dtype)
            bt[rank : rank + r, row : row + part_b.shape[0]] = part_b.T.to(bt.dtype)
            self.slot_spans[slot, q] = torch.tensor([rank, rank + r, row, row + part_b.shape[0]])
            rank += r
        self.ranks[slot] = rank

    def clear_slot(self, slot: int) -> None:
        self.lora_a[slot].zero_()  # zeros: the batched form multiplies up to the highest active rank
        self.lora_b[slot].zero_()
        self.ranks[slot] = 0
        self.slot_spans[slot].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        step = self.state.step
        if step is None:
            return y
        if self.runs_native(x, step):
            self.native.lora_add(y, x.contiguous(), self.lora_a, self.lora_b, self.slot_spans, step.slots)
            return y
        if step.gather is not None:
            return self._batched(x, y, step)
        for slot, rows in step.groups:
            r = self.ranks[slot]
            if r == 0:
                continue
            at, bt = self.lora_a[slot, :, :r], self.lora_b[slot, :r]
            if rows is None:
                y.add_((x @ at) @ bt)
            else:
                y.index_add_(0, rows, (x.index_select(0, rows) @ at) @ bt)
        return y

    def runs_native(self, x: torch.Tensor, step: LoRAStep) -> bool:
        """Whether the native lora_add computes this step's deltas: a few bf16 tokens (the decode steps the native
        DecoderStack runs), where the per-token kernel beats torch's small matmuls."""
        native = self.native is not None and x.dtype == self.lora_a.dtype == torch.bfloat16
        return native and x.shape[0] <= BATCHED_MAX_TOKENS and step.slots is not None

    def _batched(self, x: torch.Tensor, y: torch.Tensor, step: LoRAStep) -> torch.Tensor:
        n = step.num_slots
        r = max(self.ranks[:n])
        if r == 0:
            return y
        xs = x.index_select(0, step.gather).view(n, step.rows, self.in_features)
        d = torch.bmm(torch.bmm(xs, self.lora_a[:n, :, :r]), self.lora_b[:n, :r]).view(n * step.rows, -1)
        if step.keep is not None:
            d = d.index_select(0, step.keep)
        return y.index_add_(0, step.targets, d)

    def extra_repr(self) -> str:
        return f"slots={len(self.ranks)}, max_rank={self.max_rank}"
