"""MoeMlp: one decoder layer's mixture: every expert MLP on every token, summed with the gate's softmax weights.

Routing is per token: a token's weights are softmax(gate(x_t)). mistral.rs averages the softmax over the sequence of
each forward call, which for a prompt depends on how it is chunked, batched or found in the prefix cache; per-token
weights give every token the same result however its prompt is scheduled (a decode step, where mistral.rs's
sequence is the one token, is the same in both). Training fits the prompt's mean of these weights to its expert, as
mistral.rs does."""

from __future__ import annotations

import torch
from torch import nn


class MoeMlp(nn.Module):
    def __init__(self, experts: list[nn.Module], hidden_size: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.gate = nn.Linear(hidden_size, len(experts))  # float32, whatever the compute dtype
        self.gate.requires_grad_(False)
        self.training_gate = False  # record the weights with their graph (AnyMoE training)
        self.last_weights: torch.Tensor | None = None  # (T, experts) of the latest forward, while training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad() if self.training_gate else torch.no_grad():
            weights = torch.softmax(self.gate(x.detach().float()), dim=-1)
        if self.training_gate:
            self.last_weights = weights
        weights = weights.detach().to(x.dtype)
        out = None
        for e, expert in enumerate(self.experts):
            y = expert(x) * weights[:, e : e + 1]
            out = y if out is None else out.add_(y)
        return out
