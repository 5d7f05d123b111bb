"""The draft model of speculative decoding: loaded like the target (GGUF, HF folder, ISQ) into its own ModelRunner,
whose paged KV cache has the target's block count and block size. A request's draft K/V lives in the blocks its
target K/V does (the same block ids, another cache tensor): freeing, trimming and preempting the target's blocks is
all the draft cache needs. Its tokenizer must be the target's (same ids for the same tokens, same special ids).
It runs where the target runs (the engine's Placement: its device and kernels), so proposals and verification
never cross devices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..device import Placement, kv_cache_dtype_for
from ..engine.model_runner import ModelRunner
from ..engine.weight_sites import WeightSites
from ..errors import InvalidRequestError
from ..layers.kv_cache import default_kv_cache_dtype
from ..loader import open_model_source
from ..loader.model_loader import load_model
from ..quant.quantized_linear import QuantizedLinear
from ..tokenizer import Tokenizer


@dataclass
class DraftModel:
    runner: ModelRunner
    vocab_size: int  # the ids it may propose: those both models have logits for
    max_model_len: int  # its context: no draft token goes past it
    weight_bytes: int  # what one forward reads from memory, against the target's (adaptive K's cost)


def load_draft_model(
    path: str, quantization: str | None, target: Tokenizer, target_vocab_size: int, dtype: torch.dtype,
    num_blocks: int, block_size: int, between_modules: Callable[[], object] | None = None,
    placement: Placement | None = None,
) -> DraftModel:  # fmt: skip
    placement = placement or Placement(torch.device("cpu"), "native")
    source = open_model_source(path)
    check_same_tokenizer(target, _tokenizer_of(source, path), path)
    sites = WeightSites.single(placement, source.model_config().num_hidden_layers).off_host()
    model = load_model(
        source, dtype, weights="auto", quantization=quantization, between_modules=between_modules,
        backend=placement.kernels, sites=sites,
    )  # fmt: skip
    quantized = any(isinstance(m, QuantizedLinear) for m in model.modules())
    int8 = default_kv_cache_dtype(quantized) == "int8"
    kv_cache_dtype = kv_cache_dtype_for(placement.kernels, None, int8)
    runner = ModelRunner(model, num_blocks, block_size, dtype, kv_cache_dtype, placement=placement)
    config = source.model_config()
    return DraftModel(
        runner, min(config.vocab_size, target_vocab_size), config.max_position_embeddings, weight_bytes(model)
    )


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (quantized codes included): a decode step reads them all."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if t.device.type != "meta")


def check_same_tokenizer(target: Tokenizer, draft: Tokenizer, path: str) -> None:
    """A clear error naming the first thing the draft's tokenizer does differently from the target's."""
    what = None
    if draft.vocab_size != target.vocab_size:
        what = f"vocabulary size {draft.vocab_size} (the target's: {target.vocab_size})"
    else:
        mine, theirs = target.backend.get_vocab(with_added_tokens=True), draft.backend.get_vocab(with_added_tokens=True)
        if mine != theirs:
            token = min(set(mine.items()) ^ set(theirs.items()), key=lambda item: (item[1], item[0]))[0]
            what = f"token {token!r}: id {theirs.get(token)} (the target's: {mine.get(token)})"
    for name in ("bos_token_id", "eos_token_id", "eos_token_ids", "all_special_ids"):
        if what is None and getattr(draft, name) != getattr(target, name):
            what = f"{name} {_show(getattr(draft, name))} (the target's: {_show(getattr(target, name))})"
    if what is not None:
        raise InvalidRequestError(f"the draft model {path} has another tokenizer than the target model: {what}")


def _show(value: object) -> str:
    return str(sorted(value)) if isinstance(value, frozenset) else repr(value)


def _tokenizer_of(source, path: str) -> Tokenizer:
    if hasattr(source, "metadata"):
        return Tokenizer.from_gguf_metadata(source.metadata)
    return Tokenizer.from_folder(path)
