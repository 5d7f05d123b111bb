"""XLoraModel: the base model with its targeted linears wrapped as XLoraLinear, run as PEFT's XLoraModel runs:

1. the scaling pass: every adapter at `scaling_pass_value` (PEFT's dummy scalings, top-k rules applied), giving
   the last hidden states (with the default 0 it is exactly the base model);
2. the classifier on those states: per-token (per LoRA layer when layerwise) scalings;
3. the real pass mixing the adapters with them.

Caching: PEFT's generate runs without a KV cache (use_cache must be False): every step repeats both passes over the
whole sequence. Both passes are causal and the classifier is per token, so a token's scalings and both passes' K/V
depend only on the tokens before it: each pass keeps its own paged KV cache (the scaling pass's beside the runner's,
same shape, same slots and blocks), and a decode step computes exactly what PEFT's full recompute gives for the new
token. The prefix cache holds both caches' blocks under the X-LoRA model's digest. In a step that mixes X-LoRA and
plain requests, the scaling pass runs on the X-LoRA requests' tokens alone (sub_batch.py), and without the requests
whose scalings are fixed (mistral.rs's tgt_non_granular_index: non_granular.py)."""

from __future__ import annotations

import torch
from torch import nn

from ...engine.model_runner import _lazy_zeros
from ...errors import LoRAAdapterError
from .checkpoint import XLoraCheckpoint
from .classifier import XLoraClassifier, select
from .layer import XLoraLinear, XLoraState
from .non_granular import StepPlan
from .sub_batch import sub_metadata
from .targets import plan_targets


class XLoraModel(nn.Module):
    def __init__(self, model: nn.Module, checkpoint: XLoraCheckpoint, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.config, self.rotary = model, model.config, getattr(model, "rotary", None)
        self.xlora_config, self.dtype, self.digest = checkpoint.config, dtype, checkpoint.digest
        if checkpoint.config.hidden_size != model.config.hidden_size:
            raise LoRAAdapterError(
                f"{checkpoint.path}: hidden_size {checkpoint.config.hidden_size} is not the base model's "
                f"{model.config.hidden_size}"
            )
        self.state = XLoraState()
        self.layer_numbers, plan = plan_targets(model, checkpoint)  # HF module name -> PEFT's LoRA layer number
        self.num_lora_layers = len(self.layer_numbers)
        _check_classifier_output(checkpoint, self.num_lora_layers)
        self.classifier = XLoraClassifier(checkpoint.classifier, checkpoint.config, self.num_lora_layers)
        for name, parts in plan.items():
            parent, _, leaf = name.rpartition(".")
            base = model.get_submodule(name)
            setattr(model.get_submodule(parent), leaf, XLoraLinear(base, parts, dtype, self.state))
        n, cfg = checkpoint.config.num_adapters, checkpoint.config
        dummy = select(torch.full((1, self.num_lora_layers, n), cfg.scaling_pass_value), cfg)
        row = dummy.flatten() * cfg.global_scaling_weight
        self.pass_row = row if bool(row.any()) else None  # None: the scaling pass is the base model
        self.token_mask: torch.Tensor | None = None  # (T,) bool: the X-LoRA requests' tokens; None: every token
        self.latest: torch.Tensor | None = None  # the last classifier output (T, LoRA layers, adapters), float32
        self.plan: StepPlan | None = None  # the step's fixed scalings (tgt_non_granular_index: non_granular.py)
        self._scaling_kv: tuple[int, list[torch.Tensor]] | None = None

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.inner.compute_logits(hidden)

    def forward(self, input_ids, positions, kv_caches, meta) -> torch.Tensor:
        mask = self.token_mask
        self.latest = None
        if mask is not None and not bool(mask.any()):
            return self.inner(input_ids, positions, kv_caches, meta)
        plan = self.plan
        try:
            keep = mask if plan is None else plan.scaling_keep
            self.latest = self._scaling_pass(input_ids, positions, kv_caches, meta, keep)
            if plan is not None:
                self.latest = plan.apply(self.latest)
            selected = select(self.latest, self.xlora_config).flatten(1) * self.xlora_config.global_scaling_weight
            self.state.weights = self._weights(selected)
            return self.inner(input_ids, positions, kv_caches, meta)
        finally:
            self.state.weights = None

    def _scaling_pass(self, input_ids, positions, kv_caches, meta, keep: torch.Tensor | None) -> torch.Tensor:
        """The classifier's scalings of the `keep` tokens (None: all); zero rows for the others, which it skips."""
        if keep is not None and not bool(keep.any()):
            return torch.zeros(len(input_ids), self.num_lora_layers, self.xlora_config.num_adapters)
        if keep is not None and bool(keep.all()):
            keep = None
        if keep is not None:
            input_ids, positions, meta = input_ids[keep], positions[keep], sub_metadata(meta, keep)
        self.state.weights = None if self.pass_row is None else self.pass_row.expand(len(input_ids), -1).to(self.dtype)
        scalings = self.classifier(self.inner(input_ids, positions, self.scaling_caches(kv_caches), meta))
        if keep is None:
            return scalings
        full = scalings.new_zeros(len(keep), *scalings.shape[1:])
        full[keep] = scalings
        return full

    def _weights(self, rows: torch.Tensor) -> torch.Tensor:
        if self.token_mask is not None:
            rows = rows * self.token_mask.unsqueeze(1)
        return rows.to(self.dtype).contiguous()

    def scaling_caches(self, kv_caches: list[torch.Tensor]) -> list[torch.Tensor]:
        """The scaling pass's own KV cache: the runner's cache's shape, mapped lazily (pages taken as blocks fill)."""
        key = kv_caches[0].data_ptr()
        if self._scaling_kv is None or self._scaling_kv[0] != key:
            pool = _lazy_zeros((len(kv_caches), *kv_caches[0].shape), kv_caches[0].dtype)
            self._scaling_kv = (key, list(pool.unbind(0)))
        return self._scaling_kv[1]


def _check_classifier_output(checkpoint: XLoraCheckpoint, num_lora_layers: int) -> None:
    cfg = checkpoint.config
    expected = cfg.num_adapters * (num_lora_layers if cfg.layerwise_scalings else 1)
    got = checkpoint.classifier[-1][0].shape[0]
    if got != expected:
        raise LoRAAdapterError(
            f"{checkpoint.path}: the classifier gives {got} outputs; {cfg.num_adapters} adapters over "
            f"{num_lora_layers} LoRA layers (layerwise_scalings={cfg.layerwise_scalings}) need {expected}"
        )
