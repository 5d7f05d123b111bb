"""Trained gates saved and read back, so that training runs once: anymoe_gates.safetensors (each mixed layer's gate
weight and bias) and anymoe_gates.json (what they were trained for, checked when read)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import InvalidRequestError
from .config import AnyMoeConfig
from .moe_mlp import MoeMlp

GATES_FILE, META_FILE = "anymoe_gates.safetensors", "anymoe_gates.json"


def gates_meta(config: AnyMoeConfig, moe: dict[int, MoeMlp], hidden_size: int) -> dict:
    return {
        "layers": sorted(moe),
        "num_experts": config.num_experts,
        "hidden_size": hidden_size,
        "expert_type": config.expert_type,
        "model_ids": [Path(m).name for m in config.model_ids],
    }


def save_gates(folder: str | Path, moe: dict[int, MoeMlp], meta: dict) -> None:
    from safetensors.torch import save_file

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, layer in moe.items():
        tensors[f"layers.{i}.weight"] = layer.gate.weight.detach().contiguous()
        tensors[f"layers.{i}.bias"] = layer.gate.bias.detach().contiguous()
    save_file(tensors, str(path / GATES_FILE))
    (path / META_FILE).write_text(json.dumps(meta, indent=2))


def load_gates(folder: str | Path, moe: dict[int, MoeMlp], meta: dict) -> bool:
    """True when `folder` held gates for this mixture (now loaded); False when it holds none."""
    from safetensors.torch import load_file

    path = Path(folder)
    if not (path / GATES_FILE).is_file():
        return False
    try:
        saved = json.loads((path / META_FILE).read_text())
        tensors = load_file(str(path / GATES_FILE))
    except (OSError, ValueError) as e:
        raise InvalidRequestError(f"cannot read the AnyMoE gates in {path}: {e}") from None
    if saved != meta:
        raise InvalidRequestError(f"the AnyMoE gates in {path} were trained for {saved}, not for {meta}")
    with torch.no_grad():
        for i, layer in moe.items():
            layer.gate.weight.copy_(tensors[f"layers.{i}.weight"])
            layer.gate.bias.copy_(tensors[f"layers.{i}.bias"])
    return True
