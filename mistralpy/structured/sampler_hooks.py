"""Where structured output meets the sampler: the step's masks (StepMasks) applied to a chunk of rows before the
draw, the drawn tokens consumed after it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .step_masks import StepMasks, compute_step_masks
from .token_mask import MaskKernel, apply_bitmask

if TYPE_CHECKING:
    from ..engine.request import Request


def masks_for(requests: list[Request], vocab_size: int, masks: StepMasks | None) -> StepMasks | None:
    """The masks computed before the step (the model runner's), or now where none were and a request needs one."""
    if masks is not None or all(r.matcher is None for r in requests):
        return masks
    return compute_step_masks(requests, vocab_size)


def mask_chunk(
    logits: torch.Tensor, masks: StepMasks | None, start: int, kernel: MaskKernel | None = None
) -> list[int]:
    """Disallowed tokens of the constrained rows of the chunk of requests start..start+len(logits)-1 set to -inf;
    returns those rows, relative to the chunk."""
    if masks is None:
        return []
    rows, bitmask = masks.within(start, start + logits.shape[0])
    apply_bitmask(logits, bitmask, rows, kernel)
    return rows


def consume_sampled(requests: list[Request], rows: list[int], token_ids: list[int]) -> None:
    for i in rows:
        requests[i].matcher.consume(token_ids[i])
