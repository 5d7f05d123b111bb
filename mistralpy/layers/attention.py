"""Paged attention on the CPU: write K/V into cache slots, gather each sequence's blocks, attend.

Tokens of a step are ordered decode-like queries first (one query token each, batched into one call),
then prefill chunks (one call each, causal with an offset when earlier tokens are already cached). The native
kernels (mistralpy.kernels) read K/V in place from the cache blocks, decode and prefill with one arithmetic
(kernels/attention_rows.h): a token's output does not depend on how the step was scheduled. The torch paths gather
K/V first; SDPA's prefill and decode paths round differently. The cache's rows are in the model's dtype or int8
(kv_cache.py).
Per layer, attention may be limited to a sliding window of the last `window` positions (Mistral, Gemma 2) and its
scores soft-capped (Gemma 2); masks are built once per step and window, and shared by the layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import gather, is_int8, write_kv


@dataclass
class PrefillSpan:
    num_tokens: int  # query tokens of this chunk
    context_len: int  # cached + new tokens after this step
    block_table: torch.Tensor  # (num_blocks_needed,) long
    # [start, end) position ranges whose tokens attend to each other both ways (one image's tokens, Gemma 3)
    bidirectional: tuple[tuple[int, int], ...] = ()


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # (T,) long: cache slot of each token of the step
    num_decode_tokens: int = 0
    decode_block_tables: torch.Tensor | None = None  # (D, max_blocks) long
    decode_lens: torch.Tensor | None = None  # (D,) long: context length of each decode query, itself included
    prefills: list[PrefillSpan] = field(default_factory=list)
    write_kernel: Callable | None = None  # native K/V cache writes (mistralpy.kernels), when built
    decode_kernel: Callable | None = None  # native in-place decode attention (mistralpy.kernels), when built
    prefill_kernel: Callable | None = None  # native in-place prefill attention, when built
    prompt_lens: torch.Tensor | None = None  # (T,) long: prompt length of each token's request (LongRoPE reads it)
    adapters_active: bool = False  # a token runs an adapter the native DecoderStack does not (X-LoRA's)
    _masks: dict = field(default_factory=dict, repr=False)  # (kind, window) -> mask, built once per step

    def decode_mask(self, span: int, window: int | None) -> torch.Tensor:
        """(D, 1, 1, span) bool, True = attend: positions before each query's length, and inside its window."""
        key = ("decode", window)
        if key not in self._masks:
            lens = self.decode_lens.unsqueeze(1)
            pos = torch.arange(span, device=lens.device).unsqueeze(0)  # on the lens' device: no copy in a graph
            mask = pos < lens
            if window is not None:
                mask &= pos >= lens - window
            self._masks[key] = mask.view(-1, 1, 1, span)
        return self._masks[key]


class Attention(nn.Module):
    """The attention-backend seam: writes this step's K/V into the layer's cache and attends over the cached context.

    `scale` defaults to 1/sqrt(head_dim); `sliding_window` keeps the last `sliding_window` positions (the query's
    own included); `softcap` applies cap * tanh(score / cap) to the scores before the softmax."""

    def __init__(self, scale: float | None = None, sliding_window: int | None = None, softcap: float | None = None):
        super().__init__()
        self.scale, self.sliding_window, self.softcap = scale, sliding_window, softcap

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q: (T, Hq, D), k, v: (T, Hkv, D) -> (T, Hq, D)."""
        write_kv(kv_cache, k, v, meta.slot_mapping, meta.write_kernel)
        return paged_attention(q, kv_cache, meta, self.scale, self.sliding_window, self.softcap)


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """q: (T, Hq, D) with K/V already written -> (T, Hq, D)."""
    outs = []
    d = meta.num_decode_tokens
    # what the native kernels take for "none": the default scale spelled out, 0 for no window and no cap
    options = (q.shape[-1] ** -0.5 if scale is None else scale, window or 0, softcap or 0.0)
    native = native_supports(q, kv_cache)
    if d and meta.decode_kernel is not None and native:  # reads K/V in place from the cache blocks
        outs.append(meta.decode_kernel(q[:d], kv_cache, meta.decode_block_tables, meta.decode_lens, *options))
    elif d:
        k, v = gather(kv_cache, meta.decode_block_tables, q.dtype)  # (D, H, S, Dh)
        mask = meta.decode_mask(k.shape[-2], window)
        outs.append(_attend(q[:d].unsqueeze(2), k, v, mask, scale, softcap).squeeze(2))
    start = d
    for span in meta.prefills:
        q_span = q[start : start + span.num_tokens]
        if meta.prefill_kernel is not None and native and not span.bidirectional:  # the kernel is causal only
            outs.append(meta.prefill_kernel(q_span, kv_cache, span.block_table, span.context_len, *options))
        else:
            outs.append(_prefill_attention(q_span, kv_cache, span, scale, window, softcap))
        start += span.num_tokens
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def native_supports(q: torch.Tensor, kv_cache: torch.Tensor) -> bool:
    """Whether the native kernels take these queries over this cache: bf16 or float32 q, over rows of q's dtype or
    int8 rows (kernels/ops.h attention_supports)."""
    return q.dtype in (torch.bfloat16, torch.float32) and (is_int8(kv_cache) or kv_cache.dtype == q.dtype)


def _prefill_attention(q, kv_cache, span: PrefillSpan, scale, window, softcap) -> torch.Tensor:
    k, v = gather(kv_cache, span.block_table, q.dtype)
    n, ctx = span.num_tokens, span.context_len
    k, v = k[:, :ctx], v[:, :ctx]
    # a batch dimension of 1: torch's CPU flash kernel takes 4-D inputs only (3-D ones run the ~3x slower math path)
    qh, k, v = q.transpose(0, 1).unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)  # (1, H, n or ctx, D)
    if n == ctx and window is None and softcap is None and not span.bidirectional:
        gqa = qh.shape[1] != k.shape[1]
        return F.scaled_dot_product_attention(qh, k, v, is_causal=True, scale=scale, enable_gqa=gqa)[0].transpose(0, 1)
    q_pos = torch.arange(ctx - n, ctx, device=q.device).unsqueeze(1)
    k_pos = torch.arange(ctx, device=q.device).unsqueeze(0)
    mask = k_pos <= q_pos
    for start, end in span.bidirectional:  # as transformers: (causal or same image) and inside the window
        mask |= (q_pos >= start) & (q_pos < end) & (k_pos >= start) & (k_pos < end)
    if window is not None:
        mask &= k_pos > q_pos - window
    return _attend(qh, k, v, mask, scale, softcap)[0].transpose(0, 1)


def _attend(q, k, v, mask: torch.Tensor, scale: float | None, softcap: float | None) -> torch.Tensor:
    """q: (..., Hq, n, D); k, v: (..., Hkv, S, D); mask broadcastable to (..., Hq, n, S), True = attend."""
    if softcap is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[-3] != k.shape[-3]
        )
    # SDPA has no soft-capping: the scores are computed here, in float32 like the reference implementations.
    groups = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
    scores = (q.float() @ k.float().transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)
