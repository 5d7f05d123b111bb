"""The loaded model extended by what the engine config asks beyond LoRA slots: AnyMoE's mixtures (lora/anymoe) or an
X-LoRA model (lora/xlora), which then also answers for the requests' adapter (the engine's `lora`)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import EngineConfig


def extend_model(
    model: nn.Module, config: EngineConfig, dtype: torch.dtype, tokenizer, lora
) -> tuple[nn.Module, object]:
    if config.anymoe is not None:
        from .anymoe.build import attach_anymoe

        attach_anymoe(model, config.anymoe, tokenizer, dtype, config.show_progress)
    if config.xlora is not None:
        from .xlora.manager import attach_xlora

        return attach_xlora(model, config.xlora, dtype, config.xlora_name, config.xlora_log, config.xlora_non_granular)
    return model, lora
