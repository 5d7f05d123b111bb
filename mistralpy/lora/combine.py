"""A weighted sum of LoRA adapters as one adapter: each module's A stacked along the rank and its B beside them,
scaled by weight * scale, so that B' A' = sum_i w_i s_i B_i A_i exactly (PEFT's `add_weighted_adapter` with
combination_type="cat"). The sum serves both merging (folded into the weights) and a request naming several
adapters at once (mistral.rs's `adapters` field activates them together: their deltas add)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import torch

from ..errors import LoRAAdapterError
from .adapter import LoRAAdapter, LoRAWeights


def combine_adapters(parts: list[tuple[LoRAAdapter, float]]) -> LoRAAdapter:
    if not parts:
        raise LoRAAdapterError("combining LoRA adapters needs at least one adapter")
    if len(parts) == 1 and parts[0][1] == 1.0:
        return parts[0][0]
    classes = {a.base_model_class for a, _ in parts} - {None}
    if len(classes) > 1:
        raise LoRAAdapterError(f"the adapters {[str(a.path) for a, _ in parts]} were made for {sorted(classes)}")
    halves: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    digest = hashlib.sha256(b"combined")
    for adapter, weight in parts:
        digest.update(adapter.digest + struct.pack("<d", weight))
        for module, w in adapter.modules.items():
            a_list, b_list = halves.setdefault(module, ([], []))
            a_list.append(w.a)
            b_list.append(w.b * (weight * w.scale))
    modules = {m: LoRAWeights(torch.cat(a), torch.cat(b, dim=1), 1.0) for m, (a, b) in sorted(halves.items())}
    path = Path("+".join(str(a.path) for a, _ in parts))
    return LoRAAdapter(path, modules, classes.pop() if classes else None, digest.digest())
