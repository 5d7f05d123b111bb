"""The native decode-attention kernel (K/V read in place from the paged cache) against the torch path, and an engine
that uses it against one that does not."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.layers.attention import AttentionMetadata, paged_attention
from mistralpy.layers.kv_cache import dequantize_rows, quantize_rows

from . import machine


@pytest.fixture
def kernel(native_kernels):
    machine.require_native()
    return native_kernels.decode_attention


# float32: AVX-512 builds take 16 lanes and a vector exp; the others (measured on an x86-64-v3 build: 2.1e-6) 8 lanes
# or fewer and std::exp, summed in another order
F32_ATOL = 2e-6 if machine.AVX512F else 4e-6


@pytest.mark.parametrize("dtype, atol", [(torch.float32, F32_ATOL), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("window, softcap", [(None, None), (5, None), (None, 3.0), (7, 20.0)])
# bf16 64 and 128: 16 keys at a time (decode_tiles.h); 32: bf16 rows 16 lanes at a time; 24: the generic loop
@pytest.mark.parametrize("head_dim", [128, 64, 32, 24])
def test_matches_the_torch_path(kernel, dtype, atol, window, softcap, head_dim):
    gen = torch.Generator().manual_seed(0)
    num_blocks, block, kv_heads, heads = 40, 4, 2, 6
    kv = torch.randn(2, num_blocks, block, kv_heads, head_dim, generator=gen).to(dtype)
    lens = torch.tensor([7, 13, 1, 20, 4])
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:5] for _ in lens])  # scattered blocks
    q = torch.randn(len(lens), heads, head_dim, generator=gen).to(dtype)
    meta = AttentionMetadata(torch.zeros(len(lens), dtype=torch.long), len(lens), tables, lens)
    expected = paged_attention(q, kv, meta, 0.3, window, softcap)
    meta.decode_kernel = kernel
    got = paged_attention(q, kv, meta, 0.3, window, softcap)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected.float(), atol=atol, rtol=0)


@pytest.mark.parametrize("cache", ["bf16", "int8"])
@pytest.mark.parametrize("num_seqs", [1, 6])  # tasks per (sequence, KV head), or per sequence
@pytest.mark.parametrize("head_dim", [64, 128])
def test_tiles_of_keys_and_heads(kernel, cache, num_seqs, head_dim):
    """bf16 and int8 rows are scored 16 keys at a time and weighted 4 query heads x 64 dims at a time: lengths around
    and across the tile edges, and 5 query heads per KV head (a tile of 4 and one of 1), against float64 attention
    over the cache's values."""
    gen = torch.Generator().manual_seed(1)
    num_blocks, block, kv_heads, heads = 60, 8, 2, 10
    values = torch.randn(2, num_blocks, block, kv_heads, head_dim, generator=gen).bfloat16()
    kv = values if cache == "bf16" else quantize_rows(values)
    values = dequantize_rows(kv, torch.float32) if cache == "int8" else values
    lens = torch.tensor([1, 15, 16, 17, 37, 70][-num_seqs:])
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:9] for _ in lens])
    q = torch.randn(len(lens), heads, head_dim, generator=gen).bfloat16()
    meta = AttentionMetadata(torch.zeros(len(lens), dtype=torch.long), len(lens), tables, lens)
    meta.decode_kernel = kernel
    got = paged_attention(q, kv, meta, head_dim**-0.5, None, None)
    for s, n in enumerate(lens.tolist()):
        slots = torch.arange(n)
        rows = values[:, tables[s, slots // block], slots % block].double()  # (2, n, kv_heads, D)
        k, v = rows[0].repeat_interleave(heads // kv_heads, 1), rows[1].repeat_interleave(heads // kv_heads, 1)
        weights = torch.softmax(torch.einsum("hd,nhd->hn", q[s].double(), k) * head_dim**-0.5, -1)
        expected = torch.einsum("hn,nhd->hd", weights, v)
        torch.testing.assert_close(got[s].double(), expected, atol=1e-2, rtol=1e-2)


def test_engine_with_and_without_the_kernel(kernel, tiny_llama):
    prompts = [[5, 100, 2000, 31, 7, 9], list(range(300, 341))]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    native = LLM(str(tiny_llama[2]), dtype="float32", block_size=4)
    assert native.engine.model_runner.decode_kernel is kernel
    plain = LLM(str(tiny_llama[2]), dtype="float32", block_size=4)
    plain.engine.model_runner.decode_kernel = None
    for a, b in zip(native.generate(prompts, params), plain.generate(prompts, params), strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
