"""An X-LoRA model read as PEFT saves it: adapter_config.json (peft_type XLORA), the classifier's weights in
adapter_model.safetensors, and each LoRA adapter in a subfolder named after it (else at the path the config names).

The classifier is PEFT's nn.Sequential: Linear, ReLU[, Dropout] repeated xlora_depth - 1 times, then the last Linear;
its weights are keyed `...internal_xlora_classifier.layers.{i}.weight|bias`, i the Sequential's index."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import LoRAAdapterError
from ..adapter import CONFIG_FILE, WEIGHTS_FILE, LoRAAdapter, read_adapter
from .config import XLoraConfig, parse_xlora_config

_KEY = re.compile(r"(?:^|\.)internal_xlora_classifier\.layers\.(?P<index>\d+)\.(?P<kind>weight|bias)$")


@dataclass
class XLoraCheckpoint:
    path: Path
    config: XLoraConfig
    adapters: list[LoRAAdapter]  # in the config's order: adapter j is the classifier's class j
    classifier: list[tuple[torch.Tensor, torch.Tensor]]  # (weight, bias) of each Linear, first to last, float32
    digest: bytes  # identity of the whole model (config, classifier, adapters): the prefix cache's key


def read_xlora(path: str | Path) -> XLoraCheckpoint:
    folder = Path(path)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise LoRAAdapterError(f"X-LoRA model {folder} has no {p.name}")
    config_bytes, weight_bytes = config_path.read_bytes(), weights_path.read_bytes()
    try:
        raw = json.loads(config_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoRAAdapterError(f"{config_path} is not valid JSON: {e}") from None
    config = parse_xlora_config(raw, config_path)
    adapters = [read_adapter(_adapter_folder(folder, name, given)) for name, given in config.adapters.items()]
    classifier = _classifier(_load(weight_bytes, weights_path), config, weights_path)
    digest = hashlib.sha256(b"xlora" + config_bytes + weight_bytes + b"".join(a.digest for a in adapters)).digest()
    return XLoraCheckpoint(folder, config, adapters, classifier, digest)


def _adapter_folder(folder: Path, name: str, given: object) -> Path:
    saved = folder / name
    if (saved / CONFIG_FILE).is_file():
        return saved
    if isinstance(given, str) and (Path(given) / CONFIG_FILE).is_file():
        return Path(given)
    raise LoRAAdapterError(f"X-LoRA model {folder}: adapter {name!r} is neither in {saved} nor at {given!r}")


def _load(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise LoRAAdapterError(f"{path} is not a readable safetensors file: {e}") from None


def _classifier(tensors: dict[str, torch.Tensor], config: XLoraConfig, path: Path) -> list[tuple]:
    found: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        m = _KEY.search(name)
        if m is None:
            raise LoRAAdapterError(f"{path}: unexpected tensor {name!r} (not an X-LoRA classifier weight)")
        found.setdefault(int(m["index"]), {})[m["kind"]] = tensor.float()
    stride = 3 if config.xlora_dropout_p > 0 else 2  # Linear, ReLU[, Dropout]
    expected = [stride * i for i in range(config.xlora_depth)]
    if sorted(found) != expected:
        raise LoRAAdapterError(
            f"{path}: the classifier's linear layers are {sorted(found)}, but xlora_depth={config.xlora_depth} "
            f"(dropout {config.xlora_dropout_p}) makes them {expected} (PEFT 0.21's save_pretrained drops the first)"
        )
    layers = []
    for i, index in enumerate(expected):
        pair = found[index]
        if set(pair) != {"weight", "bias"}:
            raise LoRAAdapterError(f"{path}: classifier layer {index} needs a weight and a bias")
        layers.append((pair["weight"], pair["bias"]))
        _check_layer(pair["weight"], pair["bias"], i, config, path)
    return layers


def _check_layer(w: torch.Tensor, b: torch.Tensor, i: int, config: XLoraConfig, path: Path) -> None:
    depth = config.xlora_depth
    inputs = config.hidden_size if i == 0 else config.xlora_size
    last_outputs = config.num_adapters  # times the LoRA layers when layerwise: checked against the model later
    outputs = config.xlora_size if i < depth - 1 else None
    ok = w.dim() == 2 and b.shape == (w.shape[0],) and w.shape[1] == inputs
    ok = ok and (w.shape[0] == outputs if outputs is not None else w.shape[0] % last_outputs == 0)
    if not ok:
        raise LoRAAdapterError(
            f"{path}: classifier layer {i} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, which do not fit "
            f"hidden_size {config.hidden_size}, xlora_size {config.xlora_size} and {last_outputs} adapters"
        )
