"""Training the gates at load (mistral.rs's AnyMoE): the model runs each batch of prompts (its own scratch KV cache,
one prefill span per prompt); each gate's weights, averaged over a prompt's tokens, are fitted to the prompt's expert
by cross-entropy, all gates with one AdamW (their losses are independent: the mixture's outputs are detached from the
gates). The loss is shown on a progress bar and returned per epoch."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...layers.attention import AttentionMetadata, PrefillSpan
from ...layers.kv_cache import cache_shape, storage_dtype
from .config import AnyMoeConfig
from .moe_mlp import MoeMlp

BLOCK = 16
log = logging.getLogger(__name__)


def train_gates(
    model: torch.nn.Module, moe: dict[int, MoeMlp], rows: list[tuple[list[int], int]], config: AnyMoeConfig,
    dtype: torch.dtype, show_progress: bool = True,
) -> list[list[float]]:  # fmt: skip
    """Per epoch, each gate's mean loss (in the order of `moe`'s layers)."""
    torch.manual_seed(config.seed)
    for layer in moe.values():
        layer.gate.reset_parameters()
        layer.gate.requires_grad_(True)
        layer.training_gate = True
    params = [p for layer in moe.values() for p in layer.gate.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    order = torch.Generator().manual_seed(config.seed)
    history = []
    bar = tqdm(range(config.epochs), desc="AnyMoE gates", disable=not show_progress)
    try:
        for _ in bar:
            sums, batches = torch.zeros(len(moe)), 0
            for batch in torch.randperm(len(rows), generator=order).split(config.batch_size):
                losses = _batch_losses(model, moe, [rows[i] for i in batch.tolist()], dtype)
                optimizer.zero_grad()
                torch.stack(losses).sum().backward()
                optimizer.step()
                sums += torch.tensor([loss.item() for loss in losses])
                batches += 1
            history.append((sums / batches).tolist())
            bar.set_postfix(loss=f"{sum(history[-1]) / len(moe):.4f}")
    finally:
        for layer in moe.values():
            layer.gate.requires_grad_(False)
            layer.training_gate, layer.last_weights = False, None
    log.info("AnyMoE gates trained: %d epochs, final mean loss per gate %s", config.epochs, history[-1])
    return history


def _batch_losses(model, moe: dict[int, MoeMlp], batch: list[tuple[list[int], int]], dtype) -> list[torch.Tensor]:
    lengths = [len(ids) for ids, _ in batch]
    labels = torch.tensor([expert for _, expert in batch])
    with torch.no_grad():
        model(*_prefill_inputs(model, [ids for ids, _ in batch], dtype))
    losses = []
    for layer in moe.values():
        means = torch.stack([w.mean(0) for w in layer.last_weights.split(lengths)])
        losses.append(F.nll_loss(torch.log(means.clamp_min(1e-12)), labels))
    return losses


def _prefill_inputs(model, prompts: list[list[int]], dtype: torch.dtype) -> tuple:
    """input_ids, positions, KV caches and metadata of one step prefilling every prompt whole."""
    cfg = model.config
    blocks = [-(-len(ids) // BLOCK) for ids in prompts]
    shape = cache_shape(cfg.num_hidden_layers, sum(blocks), BLOCK, cfg.num_key_value_heads, cfg.head_dim, "auto")
    kv = torch.zeros(shape, dtype=storage_dtype(dtype, "auto"))
    spans, slots, first = [], [], 0
    for ids, n in zip(prompts, blocks, strict=True):
        table = torch.arange(first, first + n)
        spans.append(PrefillSpan(len(ids), len(ids), table))
        slots.append(first * BLOCK + torch.arange(len(ids)))
        first += n
    meta = AttentionMetadata(torch.cat(slots), 0, prefills=spans)
    meta.prompt_lens = torch.cat([torch.full((len(ids),), len(ids)) for ids in prompts])
    ids = torch.tensor([t for p in prompts for t in p])
    positions = torch.cat([torch.arange(len(p)) for p in prompts])
    return ids, positions, list(kv.unbind(0)), meta
