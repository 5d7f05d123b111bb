"""One model step by hand (a prefill chunk or a decode token on a ModelRunner's cache), and transformers' references."""

from __future__ import annotations

import torch

from mistralpy.engine.model_runner import ModelRunner
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan

BLOCK = 4  # KV block size of these steps: small, so that prompts span several blocks


def prefill(runner: ModelRunner, ids: list[int], start: int) -> torch.Tensor:
    n, ctx = len(ids), start + len(ids)
    meta = AttentionMetadata(
        torch.arange(start, ctx), 0, prefills=[PrefillSpan(n, ctx, torch.arange(-(-ctx // BLOCK)))]
    )
    hidden = runner.model(torch.tensor(ids), torch.arange(start, ctx), runner.kv_caches, meta)
    return runner.model.compute_logits(hidden)


def decode(runner: ModelRunner, token: int, pos: int) -> torch.Tensor:
    nb = pos // BLOCK + 1
    meta = AttentionMetadata(torch.tensor([pos]), 1, torch.arange(nb).unsqueeze(0), torch.tensor([pos + 1]))
    hidden = runner.model(torch.tensor([token]), torch.tensor([pos]), runner.kv_caches, meta)
    return runner.model.compute_logits(hidden)[0]


def bound_step(runner: ModelRunner, ids: list[int], start: int) -> torch.Tensor:
    """A prefill chunk (several ids) or a decode token (one) through the runner's bound attention kernels: float32
    logits."""
    n, ctx = len(ids), start + len(ids)
    table = torch.arange(-(-ctx // BLOCK))
    meta = AttentionMetadata(torch.arange(start, ctx), write_kernel=runner.write_kernel)
    if n == 1:
        meta.num_decode_tokens, meta.decode_block_tables, meta.decode_lens = 1, table[None], torch.tensor([ctx])
        meta.decode_kernel = runner.decode_kernel
    else:
        meta.prefills, meta.prefill_kernel = [PrefillSpan(n, ctx, table)], runner.prefill_kernel
    with torch.inference_mode():
        hidden = runner.model(torch.tensor(ids), torch.arange(start, ctx), runner.kv_caches, meta)
        return runner.model.compute_logits(hidden).float()


def reference_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    ids, out = list(ids), []
    for _ in range(n):
        token = int(reference_logits(model, ids)[-1].argmax())
        ids.append(token)
        out.append(token)
    return out
