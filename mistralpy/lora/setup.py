"""An engine's LoRA at load: the adapters of `lora_merge` folded into the weights, then (with enable_lora) the
linears wrapped for adapters chosen per request."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .manager import LoRAManager
from .merge import merge_adapters, merge_list

if TYPE_CHECKING:
    from ..config import EngineConfig


def setup_lora(model: nn.Module, config: EngineConfig, dtype: torch.dtype) -> LoRAManager | None:
    merges = merge_list(config.lora_merge)
    if merges:
        merge_adapters(model, merges, dtype)
    if not config.enable_lora:
        return None
    return LoRAManager(model, config.max_loras, config.max_lora_rank, dtype, config.max_lora_total_rank)
