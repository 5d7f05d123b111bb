"""TritonGGUFLinear: a GGUF weight kept in its blocks on the device, multiplied by gguf_matmul (dequantized 32
columns at a time inside the kernel). The blocks are GGUFLinear's, so dequantize() and embedding lookups stay the
reference's."""

from __future__ import annotations

import torch

from ..quant.ggml_types import GGMLQuantizationType
from ..quant.quantized_linear import GGUFLinear
from .gguf_matmul import TYPES, gguf_matmul


class TritonGGUFLinear(GGUFLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = gguf_matmul(x, self.blocks, self.qtype.name, self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def forward_float32(self, x: torch.Tensor) -> torch.Tensor:
        return self(x.float())


def has_triton_matmul(qtype: GGMLQuantizationType) -> bool:
    return GGMLQuantizationType(qtype).name in TYPES
