"""Build a model on the meta device and load its weights with assign=True (no double allocation)."""

from __future__ import annotations

import re

import torch
from tqdm import tqdm

from ..config import ModelConfig
from ..errors import ModelLoadError
from ..models import resolve_model_class
from .gguf import GGUFFile

_LAYER = re.compile(r"^blk\.(\d+)\.")


def load_model(source, dtype: torch.dtype, show_progress: bool = False) -> torch.nn.Module:
    cfg: ModelConfig = source.model_config()
    cls = resolve_model_class(cfg)
    with torch.device("meta"):
        model = cls(cfg)
    state = _read_state_dict(source, cls, cfg, dtype, show_progress)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ModelLoadError(
            f"weights do not match the {cfg.architecture} architecture: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.rotary.build_cache()
    return model.eval()


def _read_state_dict(source, cls, cfg: ModelConfig, dtype: torch.dtype, show_progress: bool) -> dict:
    is_gguf = isinstance(source, GGUFFile)
    state: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    names = source.tensor_names
    for name in tqdm(names, desc="Loading weights", unit="tensor", disable=not show_progress, leave=False):
        if is_gguf and name in cls.gguf_ignored:
            continue
        hf_name = _gguf_to_hf(name, cls.gguf_to_hf) if is_gguf else name
        if hf_name is None:
            raise ModelLoadError(f"unexpected tensor {name!r} for architecture {cfg.architecture}")
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        tensor = source.load_tensor(name, dtype)
        if is_gguf:
            tensor = cls.gguf_transform(hf_name, tensor, cfg)
        fused = _fused_target(hf_name, cls.fused)
        if fused is None:
            state[hf_name] = tensor
        else:
            target, index, count = fused
            parts.setdefault(target, {})[index] = tensor
            if len(parts[target]) == count:
                pieces = parts.pop(target)
                state[target] = torch.cat([pieces[i] for i in range(count)])
    if parts:
        raise ModelLoadError(f"incomplete fused weights: {sorted(parts)[:5]}")
    return state


def _gguf_to_hf(name: str, table: dict[str, str]) -> str | None:
    m = _LAYER.match(name)
    if m is None:
        return table.get(name)
    template = table.get("blk.{i}." + name[m.end() :])
    return template.format(i=m.group(1)) if template else None


def _fused_target(hf_name: str, fused: dict[str, tuple[str, int]]) -> tuple[str, int, int] | None:
    module, _, attr = hf_name.rpartition(".")
    parent, _, part = module.rpartition(".")
    if part not in fused:
        return None
    target, index = fused[part]
    count = sum(1 for t, _ in fused.values() if t == target)
    return f"{parent}.{target}.{attr}", index, count
