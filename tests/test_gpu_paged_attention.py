"""The Triton paged attention kernels through Triton's interpreter on the CPU, against attention computed here in
float64 from the same K/V laid out contiguously: decode and prefill chunks, grouped heads, blocks out of order,
sliding windows and soft-capping."""

from __future__ import annotations

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU
from mistralpy.gpu.paged_attention import paged_decode, paged_prefill  # noqa: E402

BLOCK, HKV, HQ, D = 4, 2, 4, 24  # D not a power of two: the kernels mask the padding


def paged(lengths: list[int], seed: int = 0):
    """Random K/V for sequences of `lengths` tokens, in a shuffled pool of blocks; their block tables."""
    g = torch.Generator().manual_seed(seed)
    need = [-(-n // BLOCK) for n in lengths]
    pool = torch.randperm(sum(need) + 3, generator=g)  # block ids in any order, some unused
    k_cache = torch.randn(len(pool), BLOCK, HKV, D, generator=g)
    v_cache = torch.randn(len(pool), BLOCK, HKV, D, generator=g)
    tables = torch.zeros(len(lengths), max(need), dtype=torch.int32)
    taken = 0
    for b, n in enumerate(need):
        tables[b, :n] = pool[taken : taken + n]
        taken += n
    return k_cache, v_cache, tables


def contiguous(cache, table, n):
    return cache[table.long()].reshape(-1, HKV, D)[:n].double()


def reference(q, k, v, positions, scale, window, softcap):
    """q (Tq, Hq, D) at `positions`, k/v (Tk, Hkv, D) of positions 0..Tk-1."""
    k, v = k.repeat_interleave(HQ // HKV, 1), v.repeat_interleave(HQ // HKV, 1)
    s = torch.einsum("qhd,khd->hqk", q.double() * scale, k)
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    kpos, qpos = torch.arange(k.shape[0])[None, :], torch.tensor(positions)[:, None]
    allowed = kpos <= qpos
    if window:
        allowed &= kpos > qpos - window
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", s.softmax(-1), v)


@pytest.mark.parametrize("window, softcap", [(0, 0.0), (5, 0.0), (0, 3.0)])
def test_decode(window, softcap):
    lengths = [1, 9, 16, 23]
    k_cache, v_cache, tables = paged(lengths)
    q = torch.randn(len(lengths), HQ, D)
    scale = D**-0.5
    out = paged_decode(q, k_cache, v_cache, tables, torch.tensor(lengths, dtype=torch.int32), scale, window, softcap,
                       block_n=8)  # fmt: skip
    for b, n in enumerate(lengths):
        k, v = contiguous(k_cache, tables[b], n), contiguous(v_cache, tables[b], n)
        want = reference(q[b : b + 1], k, v, [n - 1], scale, window, softcap)
        torch.testing.assert_close(out[b].double(), want[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window, softcap", [(0, 0.0), (6, 0.0), (0, 2.5)])
def test_prefill_chunks_after_cached_context(window, softcap):
    lengths, new = [5, 21, 18], [5, 3, 17]  # a whole prompt; a chunk after 18 cached tokens; one after 1
    k_cache, v_cache, tables = paged(lengths, seed=1)
    starts = torch.tensor([0, *torch.tensor(new).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(sum(new), HQ, D)
    scale = 0.3
    out = paged_prefill(q, k_cache, v_cache, tables, torch.tensor(lengths, dtype=torch.int32), starts, scale, window,
                        softcap)  # fmt: skip
    for b, (n, m) in enumerate(zip(lengths, new, strict=True)):
        k, v = contiguous(k_cache, tables[b], n), contiguous(v_cache, tables[b], n)
        rows = slice(int(starts[b]), int(starts[b + 1]))
        want = reference(q[rows], k, v, list(range(n - m, n)), scale, window, softcap)
        torch.testing.assert_close(out[rows].double(), want, atol=1e-5, rtol=1e-5)


def test_int8_rows_are_refused():
    k_cache = torch.zeros(2, BLOCK, HKV, D + 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="int8"):
        paged_decode(torch.randn(1, HQ, D), k_cache, k_cache, torch.zeros(1, 1, dtype=torch.int32),
                     torch.ones(1, dtype=torch.int32), 1.0)  # fmt: skip
