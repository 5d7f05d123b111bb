"""Normalisation layers, computed in float32 like the reference implementations (bf16 rows: one native call)."""

import torch
import torch.nn.functional as F
from torch import nn

from .native import NativeLayer


def _native_rms_norm(native, x: torch.Tensor, weight: torch.Tensor, eps: float, gemma: bool) -> torch.Tensor | None:
    if native is None or x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16:
        return None
    return native.rms_norm(x.reshape(-1, x.shape[-1]), weight, eps, gemma).view(x.shape)


class RMSNorm(nn.Module, NativeLayer):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _native_rms_norm(self.native, x, self.weight, self.eps, gemma=False)
        if out is not None:
            return out
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


class GemmaRMSNorm(RMSNorm):
    """Gemma's RMSNorm scales by (1 + weight), and multiplies in float32 before casting back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _native_rms_norm(self.native, x, self.weight, self.eps, gemma=True)
        if out is not None:
            return out
        return (F.rms_norm(x.float(), self.weight.shape, eps=self.eps) * (1.0 + self.weight.float())).to(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm with weight and bias (Phi-2)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(hidden_size), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.weight.shape, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)
