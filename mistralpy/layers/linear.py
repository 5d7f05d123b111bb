"""The linear-layer seam: every projection in a model is a `Linear`.

Models only ever build `Linear`. When a weight is stored quantized (a GGUF block type) or quantized at load (ISQ), the
loader replaces the layer by a `quant.QuantizedLinear` of the same in/out features, which keeps the weight quantized
and runs the matching kernel (see mistralpy/quant/__init__.py).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """y = x W^T (+ b) with a dense weight of shape (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_invariant_linear(x, self.weight, self.bias)


def row_invariant_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear, with a single bf16 row computed as the first of two: oneDNN's bf16 kernel sums one row in another
    order than rows of a larger batch (1 output in ~4000 differed in the last bit for 1536 inputs), so a token's
    output would depend on how many tokens its step computed (speculative decoding's verify steps compute several)."""
    if x.dtype != torch.bfloat16 or x.numel() != x.shape[-1]:
        return F.linear(x, weight, bias)
    pair = x.reshape(1, -1).expand(2, -1)
    return F.linear(pair, weight, bias)[:1].view(*x.shape[:-1], weight.shape[0])
