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
        return F.linear(x, self.weight, self.bias)
