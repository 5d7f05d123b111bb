"""A step's attention metadata cut down to some requests' tokens: the scaling pass of a batch that mixes X-LoRA and
plain requests runs on the X-LoRA requests' tokens alone (a plain request's scaling pass would be thrown away).

A step's tokens are its decode tokens (one per request) then its prefill spans, each span one request's; a request's
tokens are all kept or all dropped."""

from __future__ import annotations

import dataclasses

import torch

from ...layers.attention import AttentionMetadata


def sub_metadata(meta: AttentionMetadata, keep: torch.Tensor) -> AttentionMetadata:
    """`keep`: (T,) bool over the step's tokens."""
    d = meta.num_decode_tokens
    decode_keep = keep[:d]
    spans, offset = [], d
    for span in meta.prefills:
        if bool(keep[offset]):
            spans.append(span)
        offset += span.num_tokens
    num_decode = int(decode_keep.sum())
    return dataclasses.replace(
        meta,
        slot_mapping=meta.slot_mapping[keep],
        num_decode_tokens=num_decode,
        decode_block_tables=None if not num_decode else meta.decode_block_tables[decode_keep],
        decode_lens=None if not num_decode else meta.decode_lens[decode_keep],
        prefills=spans,
        prompt_lens=None if meta.prompt_lens is None else meta.prompt_lens[keep],
        _masks={},
    )
