"""XLoraConfig: the fields of PEFT's X-LoRA adapter_config.json (peft_type "XLORA") that inference reads, checked.

`use_trainable_adapters` and `xlora_dropout_p` are training options: they do nothing at inference. Every other field
changes the result and is honoured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import LoRAAdapterError

XLORA_ID = 1  # the X-LoRA model's lora_int_id (its LoRARequest's)


@dataclass(frozen=True)
class XLoraConfig:
    hidden_size: int
    adapters: dict[str, str]  # adapter name -> the path PEFT was given (a saved model keeps them in subfolders)
    enable_softmax: bool = True
    enable_softmax_topk: bool = False
    layerwise_scalings: bool = False
    xlora_depth: int = 1
    xlora_size: int = 2048
    xlora_dropout_p: float = 0.2
    softmax_temperature: float = 1.0
    top_k_lora: int | None = None
    scaling_pass_value: float = 0.0
    global_scaling_weight: float = 1.0

    @property
    def num_adapters(self) -> int:
        return len(self.adapters)


def parse_xlora_config(raw: object, path: Path) -> XLoraConfig:
    if not isinstance(raw, dict):
        raise LoRAAdapterError(f"{path} must hold a JSON object")
    if raw.get("peft_type") != "XLORA":
        raise LoRAAdapterError(f"{path}: peft_type is {raw.get('peft_type')!r}, not 'XLORA'")
    adapters = raw.get("adapters")
    if not isinstance(adapters, dict) or not adapters or not all(isinstance(k, str) for k in adapters):
        raise LoRAAdapterError(f"{path}: adapters must be a non-empty object of adapter names")
    fields = {
        "hidden_size": _int(raw, "hidden_size", path, None, 1),
        "adapters": dict(adapters),
        "xlora_depth": _int(raw, "xlora_depth", path, 1, 1),
        "xlora_size": _int(raw, "xlora_size", path, 2048, 1),
        "top_k_lora": _int(raw, "top_k_lora", path, None, 1, optional=True),
        "xlora_dropout_p": _number(raw, "xlora_dropout_p", path, 0.2),
        "softmax_temperature": _number(raw, "softmax_temperature", path, 1.0),
        "scaling_pass_value": _number(raw, "scaling_pass_value", path, 0.0),
        "global_scaling_weight": _number(raw, "global_scaling_weight", path, 1.0),
    }
    for key in ("enable_softmax", "enable_softmax_topk", "layerwise_scalings"):
        fields[key] = _bool(raw, key, path, getattr(XLoraConfig, key))
    config = XLoraConfig(**fields)
    if config.softmax_temperature <= 0:
        raise LoRAAdapterError(f"{path}: softmax_temperature must be positive, got {config.softmax_temperature}")
    if config.top_k_lora is not None and config.top_k_lora > config.num_adapters:
        raise LoRAAdapterError(f"{path}: top_k_lora {config.top_k_lora} exceeds the {config.num_adapters} adapters")
    if config.enable_softmax_topk and config.top_k_lora is None:
        raise LoRAAdapterError(f"{path}: enable_softmax_topk needs top_k_lora")
    return config


def _int(raw: dict, key: str, path: Path, default, low: int, optional: bool = False) -> int | None:
    value = raw.get(key, default)
    if value is None and (optional or default is not None):
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise LoRAAdapterError(f"{path}: {key} must be an integer >= {low}, got {value!r}")
    return value


def _number(raw: dict, key: str, path: Path, default: float) -> float:
    value = raw.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise LoRAAdapterError(f"{path}: {key} must be a number, got {value!r}")
    return float(value)


def _bool(raw: dict, key: str, path: Path, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise LoRAAdapterError(f"{path}: {key} must be true or false, got {value!r}")
    return value
