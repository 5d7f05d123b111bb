"""Paged attention in Triton over the engine's KV cache: a layer's K and V planes (num_blocks, block_size, Hkv, D)
read through each sequence's block table. Decode: one query a sequence, one program per (sequence, head), an online
softmax over key tiles. Prefill: a chunk of queries a sequence (their K/V already written), causal from their
positions (the chunk's tokens come last in the sequence), one program per (sequence, head, query tile). Both take
grouped-query heads, a sliding window (keys within the last `window` positions of each query) and Gemma 2's
soft-capping of the scores. Rows in the compute dtype ("auto" cache rows); arithmetic in float32."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _capped(s, softcap):
    if softcap > 0:
        s = softcap * (2.0 / (1.0 + tl.exp(-2.0 * s / softcap)) - 1.0)  # softcap * tanh(s / softcap)
    return s


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, tables_ptr, lens_ptr, scale, softcap, window,
    sq_b, sq_h, sk_blk, sk_tok, sk_h, so_b, so_h, st_b,
    GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    b, h = tl.program_id(0), tl.program_id(1)
    kvh = h // GROUP
    d = tl.arange(0, BLOCK_D)
    dmask = d < HEAD_DIM
    length = tl.load(lens_ptr + b)
    start = tl.where(window > 0, tl.maximum(length - window, 0), 0)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + d, mask=dmask, other=0.0).to(tl.float32) * scale
    m = tl.max(tl.full([BLOCK_N], -float("inf"), dtype=tl.float32), axis=0)
    l_sum = tl.sum(tl.zeros([BLOCK_N], dtype=tl.float32), axis=0)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    tile = (start // BLOCK_N) * BLOCK_N
    while tile < length:  # a while loop: the bounds are loaded values (Triton's interpreter needs no range here)
        pos = tile + tl.arange(0, BLOCK_N)
        valid = (pos < length) & (pos >= start)
        block = tl.load(tables_ptr + b * st_b + pos // BLOCK_SIZE, mask=valid, other=0)
        rows = block[:, None] * sk_blk + (pos % BLOCK_SIZE)[:, None] * sk_tok + kvh * sk_h + d[None, :]
        both = valid[:, None] & dmask[None, :]
        k = tl.load(k_ptr + rows, mask=both, other=0.0).to(tl.float32)
        s = _capped(tl.sum(k * q[None, :], axis=1), softcap)
        s = tl.where(valid, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m - m_new)
        v = tl.load(v_ptr + rows, mask=both, other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        l_sum = l_sum * alpha + tl.sum(p, axis=0)
        m = m_new
        tile += BLOCK_N
    tl.store(out_ptr + b * so_b + h * so_h + d, (acc / l_sum).to(out_ptr.dtype.element_ty), mask=dmask)


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, tables_ptr, lens_ptr, starts_ptr, scale, softcap, window,
    sq_t, sq_h, sk_blk, sk_tok, sk_h, so_t, so_h, st_b,
    GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b, h, tile_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    kvh = h // GROUP
    first, end = tl.load(starts_ptr + b), tl.load(starts_ptr + b + 1)
    q_len, length = end - first, tl.load(lens_ptr + b)
    if tile_m * BLOCK_M >= q_len:
        return
    i = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    qmask = i < q_len
    qpos = length - q_len + i  # the chunk's queries are the sequence's last tokens
    d = tl.arange(0, BLOCK_D)
    dmask = d < HEAD_DIM
    q_rows = (first + i)[:, None] * sq_t + h * sq_h + d[None, :]
    q = tl.load(q_ptr + q_rows, mask=qmask[:, None] & dmask[None, :], other=0.0).to(tl.float32) * scale
    m = tl.full([BLOCK_M], -float("inf"), dtype=tl.float32)
    l_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lowest = tl.min(tl.where(qmask, qpos, length), axis=0)
    highest = tl.max(tl.where(qmask, qpos, 0), axis=0)
    begin = tl.where(window > 0, tl.maximum(lowest - window + 1, 0), 0)
    tile = (begin // BLOCK_N) * BLOCK_N
    while tile <= highest:
        pos = tile + tl.arange(0, BLOCK_N)
        kmask = pos < length
        block = tl.load(tables_ptr + b * st_b + pos // BLOCK_SIZE, mask=kmask, other=0)
        rows = block[:, None] * sk_blk + (pos % BLOCK_SIZE)[:, None] * sk_tok + kvh * sk_h + d[None, :]
        both = kmask[:, None] & dmask[None, :]
        k = tl.load(k_ptr + rows, mask=both, other=0.0).to(tl.float32)
        s = _capped(tl.dot(q, tl.trans(k)), softcap)
        allowed = qmask[:, None] & kmask[None, :] & (pos[None, :] <= qpos[:, None])
        if window > 0:
            allowed = allowed & (pos[None, :] > qpos[:, None] - window)
        s = tl.where(allowed, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # a row with nothing allowed yet stays empty
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m - m_safe)
        v = tl.load(v_ptr + rows, mask=both, other=0.0).to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v)
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        m = m_new
        tile += BLOCK_N
    out = acc / tl.where(l_sum > 0, l_sum, 1.0)[:, None]
    o_rows = (first + i)[:, None] * so_t + h * so_h + d[None, :]
    tl.store(out_ptr + o_rows, out.to(out_ptr.dtype.element_ty), mask=qmask[:, None] & dmask[None, :])


def _check(q: torch.Tensor, k_cache: torch.Tensor) -> tuple[int, int]:
    if k_cache.dtype == torch.uint8:
        raise ValueError("the Triton attention reads compute-dtype cache rows, not int8 ones")
    heads, kv_heads = q.shape[1], k_cache.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not group over {kv_heads} KV heads")
    return heads // kv_heads, triton.next_power_of_2(q.shape[-1])


def paged_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, scale: float, window: int = 0, softcap: float = 0.0, block_n: int = 32,
) -> torch.Tensor:  # fmt: skip
    """q (B, Hq, D): each sequence's one query, at its last position (seq_lens[b] - 1) -> (B, Hq, D)."""
    group, block_d = _check(q, k_cache)
    out = torch.empty_like(q)
    grid = (q.shape[0], q.shape[1])
    _decode_kernel[grid](
        q, k_cache, v_cache, out, block_tables, seq_lens, scale, softcap, window,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0),
        out.stride(1), block_tables.stride(0), group, k_cache.shape[1], q.shape[-1], block_d, block_n,
    )  # fmt: skip
    return out


def paged_prefill(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, query_starts: torch.Tensor, scale: float, window: int = 0, softcap: float = 0.0,
    max_query_len: int | None = None, block_m: int = 16, block_n: int = 16,
) -> torch.Tensor:  # fmt: skip
    """q (T, Hq, D): sequence b's queries are rows query_starts[b]:query_starts[b + 1], its last tokens (it is
    seq_lens[b] long with them) -> (T, Hq, D)."""
    group, block_d = _check(q, k_cache)
    out = torch.empty_like(q)
    longest = max_query_len or int((query_starts[1:] - query_starts[:-1]).max())
    grid = (seq_lens.shape[0], q.shape[1], triton.cdiv(longest, block_m))
    _prefill_kernel[grid](
        q, k_cache, v_cache, out, block_tables, seq_lens, query_starts, scale, softcap, window,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0),
        out.stride(1), block_tables.stride(0), group, k_cache.shape[1], q.shape[-1], block_d, block_m, block_n,
    )  # fmt: skip
    return out
