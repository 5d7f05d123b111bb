"""Sparse mixture of experts: a softmax router sends each token to its top-k SwiGLU experts.

Each expert is a pair of `Linear`s, so a quantized file's experts stay quantized like any other projection. A step's
tokens are grouped by expert: one matmul per expert over the tokens routed to it, whatever the batch holds.
"""

from __future__ import annotations

import torch
from torch import nn

from .activation import silu_and_mul
from .linear import Linear
from .native import NativeLayer


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, expert ids), each (tokens, top_k): softmax over all experts in float32, the top-k of it,
    renormalised to sum to 1 (transformers' Mixtral router; llama.cpp's softmax gating with normalised weights)."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, ids = probs.topk(top_k, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), ids


class Expert(nn.Module, NativeLayer):
    """A SwiGLU feed-forward: w2(silu(w1 x) * w3 x), with w1 and w3 fused as w13 = [w1 | w3]."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.w13 = Linear(hidden_size, 2 * intermediate_size)
        self.w2 = Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(silu_and_mul(self.w13(x), self.native))


class SparseMoeBlock(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.gate = Linear(hidden_size, num_experts)  # the router
        self.experts = nn.ModuleList(Expert(hidden_size, intermediate_size) for _ in range(num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (tokens, hidden) -> (tokens, hidden)."""
        weights, ids = route(self.gate(x), self.top_k)
        # one slot per (token, choice): slot s belongs to token s // top_k; slots sorted by expert make each expert's
        # tokens one contiguous run
        slot_ids = ids.flatten()
        by_expert = slot_ids.argsort(stable=True)
        counts = torch.bincount(slot_ids, minlength=len(self.experts)).tolist()
        out = x.new_empty(slot_ids.numel(), x.shape[-1])
        for expert, slots in zip(self.experts, by_expert.split(counts), strict=True):
            if slots.numel():
                out[slots] = expert(x[slots // self.top_k])
        # weighted in float32, as transformers does; the sum over a token's choices does not depend on the batch
        weighted = out.float().view(-1, self.top_k, x.shape[-1]) * weights.unsqueeze(-1)
        return weighted.sum(dim=1).to(x.dtype)
