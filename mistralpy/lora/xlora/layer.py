"""XLoraLinear: a base linear (dense or quantized, untouched) plus every X-LoRA adapter's delta, each token's weighted
by its own scalings.

All adapters' parts in this linear sit side by side along one rank axis: A^T as (in, R) and (scale * B)^T as (R, out),
a fused linear's parts (q, k, v of qkv_proj) each in its own output columns. Rank column c belongs to one (LoRA layer,
adapter) pair, `columns[c]`: a step's weights (T, LoRA layers * adapters) gathered at `columns` scale the columns of
x A^T, so the whole mixture is one matmul pair: y = x W^T + ((x A^T) * w[:, columns]) (scale B)^T."""

from __future__ import annotations

import torch
from torch import nn


class XLoraState:
    """The weights the X-LoRA layers of one model apply in the pass under way: (T, LoRA layers * adapters) in the
    compute dtype (global_scaling_weight folded in; rows of plain requests zero), or None for the base alone."""

    def __init__(self) -> None:
        self.weights: torch.Tensor | None = None


class XLoraLinear(nn.Module):
    def __init__(
        self, base: nn.Module, parts: list[tuple[int, int, torch.Tensor, torch.Tensor]], dtype: torch.dtype,
        state: XLoraState,
    ) -> None:  # fmt: skip
        """`parts`: (column index into the weights, first output row, A (r, in), scale * B (rows, r)), float32."""
        super().__init__()
        self.base, self.state = base, state
        self.in_features, self.out_features = base.in_features, base.out_features
        rank = sum(a.shape[0] for _, _, a, _ in parts)
        at = torch.zeros(self.in_features, rank)
        bt = torch.zeros(rank, self.out_features)
        columns, r0 = [], 0
        for column, row, a, b in parts:
            r = a.shape[0]
            at[:, r0 : r0 + r] = a.T
            bt[r0 : r0 + r, row : row + b.shape[0]] = b.T
            columns += [column] * r
            r0 += r
        self.register_buffer("lora_at", at.to(dtype), False)
        self.register_buffer("lora_bt", bt.to(dtype), False)
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.long), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        weights = self.state.weights
        if weights is None:
            return y
        h = (x @ self.lora_at) * weights.index_select(1, self.columns)
        return y.add_(h @ self.lora_bt)

    def extra_repr(self) -> str:
        return f"rank={self.lora_at.shape[1]}"
