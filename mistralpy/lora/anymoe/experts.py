"""The experts of each mixed layer: expert 0 is the layer's own MLP; the others share its module structure (so its
activation and kernels) with other projections: a fine-tuned model's dense MLP weights, or the base projections plus a
LoRA adapter's deltas (a one-slot LoRALinear over the base weights, quantized or not, never copied)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ...errors import InvalidRequestError, LoRAAdapterError
from ...layers.linear import Linear
from ..adapter import read_adapter
from ..layer import LoRALinear, LoRAState, LoRAStep
from ..targets import map_adapter
from ..xlora.targets import candidate_linears
from .config import AnyMoeConfig


def mixed_layers(model: nn.Module, config: AnyMoeConfig) -> list[int]:
    count = len(model.model.layers)
    layers = list(range(count)) if config.layers is None else sorted(set(config.layers))
    if layers[-1] >= count:
        raise InvalidRequestError(f"anymoe layers {config.layers} name a layer past the model's {count}")
    return layers


def build_experts(model: nn.Module, config: AnyMoeConfig, dtype: torch.dtype) -> dict[int, list[nn.Module]]:
    """Layer index -> its experts, in the config's order after the base MLP."""
    layers = mixed_layers(model, config)
    experts = {i: [model.model.layers[i].mlp] for i in layers}
    for path in config.model_ids:
        build = _fine_tuned if config.expert_type == "fine_tuned" else _lora
        for i, expert in build(model, Path(path), layers, config, dtype).items():
            experts[i].append(expert)
    return experts


def _clone_with(mlp: nn.Module, replacements: dict[str, nn.Module]) -> nn.Module:
    """The MLP module with some projections replaced; the others (and the original) shared, not copied."""
    clone = copy.copy(mlp)
    clone._modules = {**mlp._modules, **replacements}
    clone._parameters, clone._buffers = dict(mlp._parameters), dict(mlp._buffers)
    return clone


def _fine_tuned(model, folder: Path, layers: list[int], config, dtype) -> dict[int, nn.Module]:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise InvalidRequestError(f"AnyMoE expert {folder}: a fine-tuned expert is a model folder with safetensors")
    fused = type(model).fused
    parts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            for name in f.keys():
                head, _, leaf = name.removesuffix(".weight").rpartition(".")
                for i in layers:
                    if head == f"model.layers.{i}.mlp" and name.endswith(".weight"):
                        target, index = fused.get(leaf, (leaf, 0))
                        parts.setdefault((i, target), {})[index] = f.get_tensor(name)
    experts = {}
    for i in layers:
        mlp = model.model.layers[i].mlp
        replacements = {}
        for target, base in mlp.named_children():
            got = parts.get((i, target))
            if got is None:
                raise InvalidRequestError(f"AnyMoE expert {folder} has no weights for model.layers.{i}.mlp.{target}")
            weight = torch.cat([got[k] for k in sorted(got)])
            if weight.shape != (base.out_features, base.in_features):
                raise InvalidRequestError(
                    f"AnyMoE expert {folder}: model.layers.{i}.mlp.{target} is {tuple(weight.shape)}, the base "
                    f"model's is {(base.out_features, base.in_features)}"
                )
            linear = Linear(base.in_features, base.out_features)
            linear.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
            replacements[target] = linear
        experts[i] = _clone_with(mlp, replacements)
    return experts


def _lora(model, folder: Path, layers: list[int], config, dtype) -> dict[int, nn.Module]:
    adapter = read_adapter(folder)
    outside = [m for m in adapter.modules if ".mlp." not in m]
    if outside:
        raise LoRAAdapterError(f"{folder}: AnyMoE experts are MLPs; the adapter also targets {outside[0]}")
    _check_against(config.lora_adapter, adapter, folder)
    targets = map_adapter(adapter, model, candidate_linears(model))
    state = LoRAState()
    state.step = LoRAStep([(0, None)])  # every token of every step: slot 0, this adapter
    experts = {}
    for i in layers:
        mlp, prefix = model.model.layers[i].mlp, f"model.layers.{i}.mlp."
        replacements = {}
        for target, base in mlp.named_children():
            parts = targets.get(prefix + target, [])
            if parts:
                layer = LoRALinear(base, 1, sum(p.weights.rank for p in parts), dtype, state)
                layer.set_slot(0, [(p.row_offset, p.weights.a, p.weights.b * p.weights.scale) for p in parts])
                replacements[target] = layer
        experts[i] = _clone_with(mlp, replacements)
    return experts


def _check_against(table: dict | None, adapter, folder: Path) -> None:
    if not table:
        return
    leaves = sorted({m.rpartition(".")[2] for m in adapter.modules})
    scale = next(iter(adapter.modules.values())).scale
    given = {"rank": adapter.rank, "alpha": scale * adapter.rank, "target_modules": leaves}
    for key, value in table.items():
        mine = sorted(value) if key == "target_modules" and isinstance(value, list) else value
        if mine != given[key] and not (
            key == "alpha" and isinstance(value, int | float) and abs(value - given[key]) < 1e-6
        ):
            raise LoRAAdapterError(
                f"{folder}: the config's lora_adapter {key}={value!r}, the adapter's is {given[key]!r}"
            )
