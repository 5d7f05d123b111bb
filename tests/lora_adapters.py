"""PEFT LoRA adapters of tiny models, made by PEFT itself (the oracle): random A and B (PEFT starts B at zero, which
would make every adapter a no-op), saved with save_pretrained."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(
    base: torch.nn.Module,
    folder: Path,
    seed: int,
    r: int = 4,
    alpha: float = 8,
    targets: list[str] | None = None,
    use_rslora: bool = False,
) -> torch.nn.Module:
    """Saves a LoRA of `base` (left untouched) into `folder`; returns the PEFT model that runs it."""
    import peft

    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=targets or ALL_TARGETS, use_rslora=use_rslora, lora_dropout=0.1
    )
    model = peft.get_peft_model(copy.deepcopy(base), config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(folder)
    return model.eval()


def peft_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()
