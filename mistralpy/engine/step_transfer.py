"""A step's index tensors (token ids, positions, slot mapping, block tables, lengths), built on the CPU, copied to
the model's device in one transfer: packed into one pinned int64 buffer, copied without blocking the host, and
split there into views of their shapes."""

from __future__ import annotations

import torch

from ..layers.attention import AttentionMetadata


def _fields(inputs) -> list[tuple[object, str]]:
    """(owner, attribute) of every tensor a step sends."""
    meta: AttentionMetadata = inputs.meta
    fields = [(inputs, "input_ids"), (inputs, "positions"), (meta, "slot_mapping")]
    fields += [(meta, n) for n in ("decode_block_tables", "decode_lens", "prompt_lens") if getattr(meta, n) is not None]
    fields += [(span, "block_table") for span in meta.prefills]
    return fields


def move_step(inputs, device: torch.device) -> None:
    """`inputs` (a model runner's StepInputs) with its index tensors on `device`, in place."""
    if device.type == "cpu":
        return
    fields = _fields(inputs)
    tensors = [getattr(owner, name).to(torch.long) for owner, name in fields]
    packed = torch.cat([t.reshape(-1) for t in tensors])
    if device.type == "cuda":
        packed = packed.pin_memory()
    on_device = packed.to(device, non_blocking=True).split([t.numel() for t in tensors])
    for (owner, name), tensor, flat in zip(fields, tensors, on_device, strict=True):
        setattr(owner, name, flat.view(tensor.shape))
