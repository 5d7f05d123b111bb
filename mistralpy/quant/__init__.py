"""Quantized weights: GGUF block types kept quantized behind one `QuantizedLinear` contract, and ISQ.

- `quantized_linear`: the contract, the reference (`GGUFLinear`), `DenseLinear`, `FusedQuantizedLinear`
- `factory`: `linear_from_gguf`, the fastest exact implementation of a GGUF weight's type on this machine
- `native_linear`: Q4_0/Q4_1/Q4_K/Q5_0/Q5_1/Q5_K/Q8_0 on the native kernel (mistralpy/kernels), where it is built
- `int4_linear`, `int4pack`: the same types on torch's int4 kernel, Q4_* in one nibble plane, Q5_*/Q8_0 in two
- `affine`: every block type as group-affine integer codes; `gguf_dequant`: bit-exact dequantization
- `quantized_embedding`: embedding lookups (and tied logits) from a quantized table
- `isq`, `kquant`: in-situ quantization to q4_0, q4_1, q8_0, q4_k
"""

from .int4_linear import Int4PackLinear
from .isq import ISQ_TYPES
from .native_linear import NativeQuantLinear
from .quantized_embedding import QuantizedEmbedding
from .quantized_linear import DenseLinear, FusedQuantizedLinear, GGUFLinear, QuantizedLinear

__all__ = [
    "ISQ_TYPES",
    "DenseLinear",
    "FusedQuantizedLinear",
    "GGUFLinear",
    "Int4PackLinear",
    "NativeQuantLinear",
    "QuantizedEmbedding",
    "QuantizedLinear",
]
