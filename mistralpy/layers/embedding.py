"""The token embedding; with tied weights it is also the output projection (`logits`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VocabEmbedding(nn.Embedding):
    """nn.Embedding plus `logits(hidden)`, the interface a quantized embedding (quant.QuantizedEmbedding) shares.

    The weight starts uninitialised, like `Linear`'s: it always comes from the checkpoint, and a random init on the
    meta device would import torch._dynamo (~70 MB resident) for nothing."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        weight = torch.empty(num_embeddings, embedding_dim)
        super().__init__(num_embeddings, embedding_dim, _weight=weight, _freeze=True)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight)
