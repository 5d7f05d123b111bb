"""Paged attention on the CPU: write K/V into cache slots, gather each sequence's blocks, run SDPA.

Tokens of a step are ordered decode-like queries first (one query token each, batched into one SDPA call),
then prefill chunks (one SDPA call each, causal with an offset when earlier tokens are already cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class PrefillSpan:
    num_tokens: int  # query tokens of this chunk
    context_len: int  # cached + new tokens after this step
    block_table: torch.Tensor  # (num_blocks_needed,) long


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # (T,) long: cache slot of each token of the step
    num_decode_tokens: int = 0
    decode_block_tables: torch.Tensor | None = None  # (D, max_blocks) long
    decode_mask: torch.Tensor | None = None  # (D, 1, 1, max_blocks * block_size) bool, True = attend
    prefills: list[PrefillSpan] = field(default_factory=list)


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """kv_cache: (2, num_blocks, block_size, Hkv, D); k, v: (T, Hkv, D)."""
    flat = kv_cache.view(2, -1, *kv_cache.shape[3:])
    flat[0].index_copy_(0, slot_mapping, k)
    flat[1].index_copy_(0, slot_mapping, v)


def paged_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float | None = None
) -> torch.Tensor:
    """q: (T, Hq, D) with K/V already written -> (T, Hq, D)."""
    outs = []
    d = meta.num_decode_tokens
    if d:
        outs.append(_decode_attention(q[:d], kv_cache, meta, scale))
    start = d
    for span in meta.prefills:
        outs.append(_prefill_attention(q[start : start + span.num_tokens], kv_cache, span, scale))
        start += span.num_tokens
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _gather(kv_cache: torch.Tensor, block_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> k, v of shape (..., Hkv, S, D) for the blocks in block_table (any leading shape)."""
    k = kv_cache[0][block_table]  # (..., nb, bs, H, D)
    v = kv_cache[1][block_table]
    k = k.flatten(-4, -3).transpose(-3, -2)
    v = v.flatten(-4, -3).transpose(-3, -2)
    return k, v


def _decode_attention(q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale) -> torch.Tensor:
    k, v = _gather(kv_cache, meta.decode_block_tables)  # (D, H, S, Dh)
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2), k, v, attn_mask=meta.decode_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )
    return out.squeeze(2)


def _prefill_attention(q: torch.Tensor, kv_cache: torch.Tensor, span: PrefillSpan, scale) -> torch.Tensor:
    k, v = _gather(kv_cache, span.block_table)
    k, v = k[:, : span.context_len], v[:, : span.context_len]
    qh = q.transpose(0, 1)  # (Hq, n, D)
    n, ctx = span.num_tokens, span.context_len
    gqa = qh.shape[0] != k.shape[0]
    if n == ctx:
        out = F.scaled_dot_product_attention(qh, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        q_pos = torch.arange(ctx - n, ctx).unsqueeze(1)
        mask = torch.arange(ctx).unsqueeze(0) <= q_pos
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out.transpose(0, 1)
