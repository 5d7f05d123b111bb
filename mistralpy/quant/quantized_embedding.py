"""QuantizedEmbedding: a token embedding kept quantized; lookups decode only the rows they read."""

from __future__ import annotations

import torch
from torch import nn

from .quantized_linear import QuantizedLinear


class QuantizedEmbedding(nn.Module):
    """Embedding rows and, for tied embeddings, the output projection, from one quantized (vocab, hidden) table."""

    def __init__(self, table: QuantizedLinear, dtype: torch.dtype) -> None:
        super().__init__()
        self.table = table
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.table.dequantize_rows(ids.reshape(-1)).to(self.dtype)
        return rows.view(*ids.shape, self.embedding_dim)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.table.forward_float32(hidden)

    @property
    def nbytes(self) -> int:
        return self.table.nbytes
