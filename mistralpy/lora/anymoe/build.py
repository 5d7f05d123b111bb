"""`attach_anymoe`: a loaded model's chosen MLPs replaced by mixtures (MoeMlp) of the configured experts, their gates
read from `gate_model_id` or trained on the dataset (and then saved there)."""

from __future__ import annotations

import csv

import torch
from torch import nn

from ...errors import InvalidRequestError
from .config import AnyMoeConfig
from .dataset import read_dataset
from .experts import build_experts
from .gates import gates_meta, load_gates, save_gates
from .moe_mlp import MoeMlp
from .trainer import train_gates


def attach_anymoe(
    model: nn.Module, config: AnyMoeConfig, tokenizer, dtype: torch.dtype, show_progress: bool = True
) -> dict[int, MoeMlp]:
    """Layer index -> its mixture, in place in `model`."""
    if not hasattr(model, "model") or not hasattr(model.model, "layers"):
        raise InvalidRequestError(f"AnyMoE needs a decoder model; {type(model).__name__} is not one")
    experts = build_experts(model, config, dtype)
    moe = {}
    for i, layer_experts in experts.items():
        moe[i] = MoeMlp(layer_experts, model.config.hidden_size)
        model.model.layers[i].mlp = moe[i]
    meta = gates_meta(config, moe, model.config.hidden_size)
    if config.gate_model_id is not None and load_gates(config.gate_model_id, moe, meta):
        return moe
    rows = [(tokenizer.encode(prompt), expert) for prompt, expert in read_dataset(config)]
    history = train_gates(model, moe, rows, config, dtype, show_progress)
    if config.gate_model_id is not None:
        save_gates(config.gate_model_id, moe, meta)
    if config.loss_csv_path is not None:
        with open(config.loss_csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", *(f"layer_{i}" for i in moe)])
            writer.writerows([epoch, *losses] for epoch, losses in enumerate(history))
    return moe
