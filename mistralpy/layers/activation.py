"""Activations: gated ones over a fused [gate | up] projection, and plain GELU."""

from types import ModuleType

import torch
import torch.nn.functional as F


def silu_and_mul(gate_up: torch.Tensor, native: ModuleType | None = None) -> torch.Tensor:
    """`native`: the kernels of the calling layer (layers/native.py), whose bf16 SiLU-and-mul runs where given."""
    if native is not None and gate_up.dtype == torch.bfloat16:
        return native.silu_and_mul(gate_up.reshape(-1, gate_up.shape[-1])).view(*gate_up.shape[:-1], -1)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def gelu_tanh_and_mul(gate_up: torch.Tensor, native: ModuleType | None = None) -> torch.Tensor:
    """GeGLU with the tanh approximation of GELU (Gemma's gelu_pytorch_tanh). The C++ kernels have none; the Triton
    kernels (a CUDA engine's, gpu/kernel_set.py) have one for bf16."""
    if native is not None and hasattr(native, "gelu_tanh_and_mul") and gate_up.dtype == torch.bfloat16:
        return native.gelu_tanh_and_mul(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.gelu(gate, approximate="tanh") * up


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (HF's gelu_new / gelu_pytorch_tanh)."""
    return F.gelu(x, approximate="tanh")
