"""Decode and prefill attention share one arithmetic (kernels/attention_rows.h): a query's output is the same bits
whether its token is decoded alone or in a batch, prefilled with its whole prompt, or in a chunk over cached
positions. Kernel against kernel here; their accuracy against float64 is in test_native_attention.py."""

from __future__ import annotations

import pytest
import torch

from mistralpy.layers.kv_cache import quantize_rows

from . import machine

CACHES = [("int8", torch.bfloat16), ("int8", torch.float32), ("bf16", torch.bfloat16), ("f32", torch.float32)]
SCALE = 0.125


@pytest.fixture
def native(native_kernels):
    machine.require_native()  # where the machine can build them, a failed build fails the run (conftest)
    return native_kernels


def _case(cache: str, qdtype: torch.dtype, ctx: int, head_dim: int, heads: int = 9, kv_heads: int = 3, seed: int = 0):
    """Keys in scattered cache blocks of 16 and one query row per position."""
    gen = torch.Generator().manual_seed(seed)
    num_blocks = -(-ctx // 16)
    values = torch.randn(2, num_blocks + 3, 16, kv_heads, head_dim, generator=gen)
    kv = quantize_rows(values) if cache == "int8" else values.to(qdtype)
    table = torch.randperm(num_blocks + 3, generator=gen)[:num_blocks]
    q = torch.randn(ctx, heads, head_dim, generator=gen).to(qdtype)
    return q, kv, table


def _decode(native, q_rows, kv, table, positions, window, cap):
    """Decode attention of each row at its position, all in one batch."""
    tables = table.expand(len(positions), -1).contiguous()
    lens = torch.tensor(positions) + 1
    return native.decode_attention(q_rows.contiguous(), kv, tables, lens, SCALE, window, cap)


@pytest.mark.parametrize("cache, qdtype", CACHES)
@pytest.mark.parametrize("head_dim", [64, 128, 80, 24])
@pytest.mark.parametrize("window, cap", [(0, 0.0), (9, 0.0), (0, 30.0), (20, 5.0)])
def test_decode_prefill_and_chunks_give_the_same_bits(native, cache, qdtype, head_dim, window, cap):
    ctx = 45
    q, kv, table = _case(cache, qdtype, ctx, head_dim)
    whole = native.prefill_attention(q, kv, table, ctx, SCALE, window, cap)
    for start in (1, 7, 16, 33, ctx - 1):  # chunks over cached positions, down to a single row
        chunk = native.prefill_attention(q[start:], kv, table, ctx, SCALE, window, cap)
        assert torch.equal(chunk, whole[start:]), start
    for pos in range(ctx):  # each position decoded alone, its context cut at itself
        alone = _decode(native, q[pos : pos + 1], kv, table, [pos], window, cap)
        assert torch.equal(alone[0], whole[pos]), pos
    batch = _decode(native, q, kv, table, list(range(ctx)), window, cap)  # all positions as one decode batch
    assert torch.equal(batch, whole)


@pytest.mark.parametrize("cache, qdtype", CACHES)
def test_decode_rows_do_not_depend_on_the_batch(native, cache, qdtype):
    """One sequence, or the same sequence among many (tasks per sequence instead of per KV head)."""
    ctx = 70
    q, kv, table = _case(cache, qdtype, ctx, 64, seed=3)
    positions = list(range(ctx - 1, 0, -5))
    batch = _decode(native, q[positions], kv, table, positions, 0, 0.0)
    for i, pos in enumerate(positions):
        assert torch.equal(_decode(native, q[pos : pos + 1], kv, table, [pos], 0, 0.0)[0], batch[i])


def test_unsupported_inputs_are_refused(native):
    q, kv, table = _case("bf16", torch.bfloat16, 8, 64)
    with pytest.raises(RuntimeError, match="bf16 or float32 queries"):
        native.prefill_attention(q.half(), kv.half(), table, 8, SCALE, 0, 0.0)
    with pytest.raises(RuntimeError, match="bf16 or float32 queries"):
        native.prefill_attention(q.float(), kv, table, 8, SCALE, 0, 0.0)  # float queries over a bf16 cache
