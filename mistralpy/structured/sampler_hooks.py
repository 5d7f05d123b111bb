"""Where structured output meets the sampler: the step's masks (StepMasks) applied to a chunk of rows before the
draw, the drawn tokens consumed after it, and the requests whose grammar could not go on taken out of the step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .step_masks import StepMasks, compute_step_masks
from .token_mask import MaskKernel, apply_bitmask

if TYPE_CHECKING:
    from ..engine.request import Request
    from ..engine.scheduler import SchedulerOutput


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


def take_dead_grammars(sched: SchedulerOutput, sampled: dict[str, int]) -> list[Request]:
    """The requests whose grammar cannot go on (llguidance refused the drawn token, or ran past one of its parser
    limits while masking): their token is dropped from `sampled`; they fail alone, with llguidance's message."""
    failed = []
    for s in sched.scheduled:
        req = s.request
        if req.matcher is not None and req.request_id in sampled and req.matcher.error is not None:
            del sampled[req.request_id]
            req.error = f"structured output failed: {req.matcher.error}"
            failed.append(req)
    return failed
