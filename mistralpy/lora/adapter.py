"""A PEFT LoRA adapter read from its folder (adapter_config.json + adapter_model.safetensors), checked on its own.

Each targeted module holds A (r, in) and B (out, r); its delta is x A^T B^T * scale, scale = lora_alpha / r
(lora_alpha / sqrt(r) with use_rslora). Dropout is a training-time option and does nothing at inference. PEFT options
that change the computation and that this reader does not implement are refused by name, never ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LoRAAdapterError

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
_TENSOR = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
# options whose non-default value changes the result: refused rather than ignored
_UNSUPPORTED = {
    "use_dora": False,
    "fan_in_fan_out": False,
    "lora_bias": False,
    "modules_to_save": None,
    "layer_replication": None,
    "trainable_token_indices": None,
    "use_qalora": False,
    "alora_invocation_tokens": None,
    "target_parameters": None,
}


@dataclass
class LoRAWeights:
    """One targeted module: A (rank, in_features), B (out_features, rank) as float32, and its scale."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass
class LoRAAdapter:
    path: Path
    modules: dict[str, LoRAWeights]  # Hugging Face module path (model.layers.0.self_attn.q_proj) -> weights
    base_model_class: str | None  # PEFT's auto_mapping.base_model_class, e.g. "LlamaForCausalLM"
    digest: bytes  # SHA-256 of the config and weights: the adapter's identity in prefix-cache keys

    @property
    def rank(self) -> int:
        return max(w.rank for w in self.modules.values())


def read_adapter(path: str | Path) -> LoRAAdapter:
    folder = Path(path)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise LoRAAdapterError(f"LoRA adapter folder {folder} does not exist")
    if not config_path.is_file():
        raise LoRAAdapterError(f"LoRA adapter {folder} has no {CONFIG_FILE}")
    if not weights_path.is_file():
        raise LoRAAdapterError(f"LoRA adapter {folder} has no {WEIGHTS_FILE} (only safetensors adapters are read)")
    config_bytes, weight_bytes = config_path.read_bytes(), weights_path.read_bytes()
    config = _read_config(config_bytes, config_path)
    tensors = _read_tensors(weight_bytes, weights_path)
    modules = _pair_modules(tensors, config, weights_path)
    auto = config.get("auto_mapping") or {}
    digest = hashlib.sha256(len(config_bytes).to_bytes(8, "little") + config_bytes + weight_bytes).digest()
    return LoRAAdapter(folder, modules, auto.get("base_model_class"), digest)


def _read_config(data: bytes, path: Path) -> dict:
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoRAAdapterError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise LoRAAdapterError(f"{path} must hold a JSON object")
    if config.get("peft_type") != "LORA":
        raise LoRAAdapterError(f"{path}: peft_type is {config.get('peft_type')!r}; only LORA adapters are supported")
    r, alpha = config.get("r"), config.get("lora_alpha", 8)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise LoRAAdapterError(f"{path}: r must be a positive integer, got {r!r}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise LoRAAdapterError(f"{path}: lora_alpha must be a number, got {alpha!r}")
    for key, default in _UNSUPPORTED.items():
        if config.get(key, default) not in (default, [], {}):
            raise LoRAAdapterError(f"{path}: {key}={config[key]!r} is not supported")
    if config.get("bias", "none") != "none":
        raise LoRAAdapterError(f"{path}: bias={config['bias']!r} is not supported (only 'none')")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise LoRAAdapterError(f"{path}: per-module {key} is not supported")
    return config


def _read_tensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise LoRAAdapterError(f"{path} is not a readable safetensors file: {e}") from None


def _pair_modules(tensors: dict[str, torch.Tensor], config: dict, path: Path) -> dict[str, LoRAWeights]:
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        m = _TENSOR.match(name)
        if m is None:
            raise LoRAAdapterError(f"{path}: unexpected tensor {name!r} (not a LoRA A/B weight of a linear module)")
        if tensor.dim() != 2 or not tensor.is_floating_point():
            raise LoRAAdapterError(f"{path}: tensor {name!r} must be a 2-D float matrix, got {tuple(tensor.shape)}")
        halves.setdefault(m["module"], {})[m["ab"]] = tensor
    if not halves:
        raise LoRAAdapterError(f"{path} holds no LoRA weights")
    r, alpha = config["r"], config.get("lora_alpha", 8)
    scale = alpha / math.sqrt(r) if config.get("use_rslora", False) else alpha / r
    modules = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            missing = ({"A", "B"} - set(pair)).pop()
            raise LoRAAdapterError(f"{path}: module {module} has no lora_{missing} weight")
        a, b = pair["A"].float(), pair["B"].float()
        if a.shape[0] != b.shape[1]:
            raise LoRAAdapterError(
                f"{path}: rank mismatch in {module}: lora_A has rank {a.shape[0]}, lora_B has rank {b.shape[1]}"
            )
        if a.shape[0] != r:
            raise LoRAAdapterError(f"{path}: {module} has rank {a.shape[0]}, but adapter_config.json says r={r}")
        modules[module] = LoRAWeights(a, b, scale)
    return modules
