"""The paged KV cache's row formats: writing a step's K/V into cache slots, and reading blocks back for the torch paths.

A layer's cache is (2, num_blocks, block_size, Hkv, row): the K plane, then the V plane; a row is one token's K or V
for one KV head. With kv_cache_dtype "auto" a row is the head's D values in the compute dtype. With "int8" (like
llama.cpp's q8_0 cache type) the tensor is uint8 and a row is D int8 codes followed by the row's float32 scale,
max|x| / 127: 68 bytes where a bf16 row of 64 takes 128. kernels/kv_cache.h is the native side of the same format;
both round x / scale half to even, so the two write the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InvalidRequestError

KV_CACHE_DTYPES = ("auto", "int8")
SCALE_BYTES = 4  # a float32 scale after each int8 row


def check_kv_cache_dtype(name: str | None) -> str | None:
    if name is not None and name not in KV_CACHE_DTYPES:
        raise InvalidRequestError(f"unsupported kv_cache_dtype {name!r}; use one of: {', '.join(KV_CACHE_DTYPES)}")
    return name


def default_kv_cache_dtype(quantized_weights: bool) -> str:
    """kv_cache_dtype when none is given: int8 for quantized weights, in any compute dtype (llama.cpp's default is f16
    K/V whatever its weights); the compute dtype ("auto") for full-precision weights, whose users ask for their
    precision. Embedded model's perplexity: bf16 compute 6.971 with int8 rows vs 6.988 with bf16 rows; float32 compute
    (the portable level's) 6.951 vs 6.941 (+0.14%), where int8 rows take a quarter of float32's memory: 32 chats of
    ~170 tokens hold ~65 MiB of them instead of ~245 (docs/BENCHMARKS.md, the portable level's 32-chat peak RSS)."""
    return "int8" if quantized_weights else "auto"


def cache_shape(num_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int, kv_cache_dtype: str):
    row = head_dim + SCALE_BYTES if kv_cache_dtype == "int8" else head_dim
    return (num_layers, 2, num_blocks, block_size, kv_heads, row)


def storage_dtype(dtype: torch.dtype, kv_cache_dtype: str) -> torch.dtype:
    return torch.uint8 if kv_cache_dtype == "int8" else dtype


def is_int8(kv_cache: torch.Tensor) -> bool:
    return kv_cache.dtype == torch.uint8


def quantize_rows(x: torch.Tensor) -> torch.Tensor:
    """(..., D) float rows -> (..., D + 4) uint8 int8 rows."""
    x = x.float()
    scale = x.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(scale > 0, 1 / scale, 0.0)
    codes = (x * inv).clamp(-127, 127).round().to(torch.int8)
    return torch.cat([codes.view(torch.uint8), scale.view(torch.uint8)], -1)


def dequantize_rows(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(..., D + 4) uint8 int8 rows -> (..., D) of `dtype`."""
    codes = rows[..., :-SCALE_BYTES].view(torch.int8)
    scale = rows[..., -SCALE_BYTES:].contiguous().view(torch.float32)
    return (codes.float() * scale).to(dtype)


def write_kv(
    kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor, kernel: Callable | None
) -> None:
    """k, v: (T, Hkv, D) into the slots of slot_mapping; `kernel` is the native write_kv, when built."""
    if kernel is not None and _rows_contiguous(k) and _rows_contiguous(v):
        kernel(kv_cache, k, v, slot_mapping)
        return
    if is_int8(kv_cache):
        k, v = quantize_rows(k), quantize_rows(v)
    flat = kv_cache.view(2, -1, *kv_cache.shape[3:])
    flat[0].index_copy_(0, slot_mapping, k)
    flat[1].index_copy_(0, slot_mapping, v)


def gather(kv_cache: torch.Tensor, block_table: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """-> k, v of shape (..., Hkv, S, D) in `dtype`, for the blocks in block_table (any leading shape)."""
    k = kv_cache[0][block_table]  # (..., nb, bs, H, row)
    v = kv_cache[1][block_table]
    if is_int8(kv_cache):
        k, v = dequantize_rows(k, dtype), dequantize_rows(v, dtype)
    k = k.flatten(-4, -3).transpose(-3, -2)
    v = v.flatten(-4, -3).transpose(-3, -2)
    return k, v


def _rows_contiguous(x: torch.Tensor) -> bool:
    return x.stride(-1) == 1 and x.stride(-2) == x.shape[-1]
