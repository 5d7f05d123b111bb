"""Which native kernels a model's own layers call (norms, rotary, SiLU-and-mul): fixed once per model when its engine
starts, so that its numerics never change mid-life because another engine in the same process loaded the kernels
later (bf16 kernels and torch paths differ in the last bit, enough to change a greedy token)."""

from __future__ import annotations

from types import ModuleType

from torch import nn


class NativeLayer:
    """A layer with a native bf16 path: `native` is the kernels module its model was bound to (None: torch's path)."""

    native: ModuleType | None = None


def bind_native(model: nn.Module, native: ModuleType | None) -> None:
    for module in model.modules():
        if isinstance(module, NativeLayer):
            module.native = native
