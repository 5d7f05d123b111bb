"""The QuantizedLinear for a GGUF weight: the fastest exact implementation of its type on this machine."""

from __future__ import annotations

import torch

from ..errors import ModelLoadError
from .ggml_types import GGMLQuantizationType
from .gguf_dequant import SUPPORTED_TYPES
from .int4_linear import INT4_TYPES, Int4PackLinear
from .native_linear import NATIVE_TYPES, NativeQuantLinear, native_qmatmul
from .quantized_linear import DenseLinear, QuantizedLinear


def linear_from_gguf(
    raw: torch.Tensor,
    qtype: GGMLQuantizationType,
    shape: tuple[int, ...],
    bias: torch.Tensor | None = None,
    dtype: torch.dtype = torch.bfloat16,
    kernels: str = "native",
) -> QuantizedLinear:
    """Where the native kernel is built, every group-quantized type (groups of 32, and the K-quants with 16-weight
    scales) keeps only its codes, whatever `dtype` (the kernel takes bf16; other activation dtypes dequantize per
    call, exact but slow). Without it, the types with groups of 32 run on torch's int4 kernel, and the others keep
    their blocks plus a dense copy. `kernels` "triton" (a CUDA engine, device.py): the types with a Triton matmul keep
    their blocks for it, the others their blocks plus a dense copy."""
    if qtype not in SUPPORTED_TYPES:
        raise ModelLoadError(f"unsupported GGUF tensor type {GGMLQuantizationType(qtype).name}")
    if len(shape) != 2:
        raise ModelLoadError(f"a linear weight must be 2-D, got shape {tuple(shape)}")
    if kernels == "triton":
        from ..gpu.gguf_linear import TritonGGUFLinear, has_triton_matmul

        if has_triton_matmul(qtype):
            return TritonGGUFLinear(raw, qtype, shape, bias)
        return DenseLinear(raw, qtype, shape, bias, dtype)
    native = native_qmatmul() if qtype in NATIVE_TYPES else None
    if native is not None:
        return NativeQuantLinear.from_gguf_blocks(raw, qtype, shape, bias, native)
    if qtype in INT4_TYPES:
        return Int4PackLinear.from_gguf_blocks(raw, qtype, shape, bias)
    return DenseLinear(raw, qtype, shape, bias, dtype)
