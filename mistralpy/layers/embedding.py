"""The token embedding; with tied weights it is also the output projection (`logits`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VocabEmbedding(nn.Embedding):
    """nn.Embedding plus `logits(hidden)`, the interface a quantized embedding (quant.QuantizedEmbedding) shares."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight)
