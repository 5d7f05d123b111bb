"""The native decode-attention kernel (K/V read in place from the paged cache) against the torch path, and an engine
that uses it against one that does not."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.layers.attention import AttentionMetadata, paged_attention
from mistralpy.layers.kv_cache import dequantize_rows, quantize_rows

from . import machine
from .test_kv_cache_int8 import _quantize_q


@pytest.fixture
def kernel(native_kernels):
    machine.require_native()
    return native_kernels.decode_attention


# float32: AVX-512 builds take 16 lanes and a vector exp; the others (measured on an x86-64-v3 build: 2.1e-6) 8 lanes
# or fewer and std::exp, summed in another order
F32_ATOL = 2e-6 if machine.AVX512F else 4e-6


@pytest.mark.parametrize("dtype, atol", [(torch.float32, F32_ATOL), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("window, softcap", [(None, None), (5, None), (None, 3.0), (7, 20.0)])
# 64 and 128: whole vectors; 32: half a bf16 chunk; 24: partial vectors everywhere
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
    if softcap is not None and dtype == torch.float32:
        atol = 5e-6  # the kernels' tanh is 1 - 2 / (e^2x + 1) with their exp (kernels/vec_exp.h: ~1e-7 relative)
    torch.testing.assert_close(got.float(), expected.float(), atol=atol, rtol=0)


@pytest.mark.parametrize("cache", ["bf16", "int8"])
@pytest.mark.parametrize("num_seqs", [1, 6])  # tasks per (sequence, KV head), or per sequence
@pytest.mark.parametrize("head_dim", [64, 128])
def test_tiles_of_keys_and_heads(kernel, cache, num_seqs, head_dim):
    """Keys are scored 16 at a time and weighted up to 8 query heads at a time: lengths around and across the tile
    edges, and 9 query heads per KV head (a pass of 8 and one of 1), against float64 attention over the cache's
    values (int8: with q rounded as the kernels round it)."""
    gen = torch.Generator().manual_seed(1)
    num_blocks, block, kv_heads, heads = 60, 8, 2, 18
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
        q_ref = _quantize_q(q[s]) if cache == "int8" else q[s].double()
        weights = torch.softmax(torch.einsum("hd,nhd->hn", q_ref, k) * head_dim**-0.5, -1)
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
