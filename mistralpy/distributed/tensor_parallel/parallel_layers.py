"""The layers of a loaded rank's model made parallel: the vocabulary-sharded embedding and LM head, and an all-reduce
after each row-parallel projection (after a whole MoE block for its experts' down projections: one per layer)."""

from __future__ import annotations

import torch
from torch import nn

from ...layers.moe import SparseMoeBlock
from .group import TPGroup
from .split_plan import ROW_PARALLEL


class VocabParallelEmbedding(nn.Module):
    """Rows [start, start + rows) of the table: other ids look up zeros, and the all-reduce fills them in."""

    def __init__(self, inner: nn.Module, group: TPGroup) -> None:
        super().__init__()
        self.inner, self.group = inner, group
        self.rows = inner.num_embeddings
        self.start = group.rank * self.rows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mine = (ids >= self.start) & (ids < self.start + self.rows)
        x = self.inner(torch.where(mine, ids - self.start, 0))
        return self.group.all_reduce(x.masked_fill(~mine.unsqueeze(-1), 0))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.group.gather_logits(hidden, self.inner.logits)


class ParallelLMHead(nn.Module):
    def __init__(self, inner: nn.Module, group: TPGroup) -> None:
        super().__init__()
        self.inner, self.group = inner, group

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.group.gather_logits(hidden, self.inner)


def parallelize(model: nn.Module, group: TPGroup) -> nn.Module:
    """The loaded shard, its collectives added. The native DecoderStack (which would skip them) is not built over
    hooked projections: decode steps run the per-layer path."""

    def reduce(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return group.all_reduce(out)

    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if isinstance(module, SparseMoeBlock) or (leaf in ROW_PARALLEL and ".experts." not in name):
            module.register_forward_hook(reduce)
    model.model.embed_tokens = VocabParallelEmbedding(model.model.embed_tokens, group)
    if model.lm_head is not None:
        model.lm_head = ParallelLMHead(model.lm_head, group)
    model.model.forget_decode_stack()
    return model
