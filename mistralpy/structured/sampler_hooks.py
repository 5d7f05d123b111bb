"""Where structured output meets the sampler: masks before the draw, the drawn tokens consumed after it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .token_mask import apply_token_masks

if TYPE_CHECKING:
    from ..engine.request import Request


def mask_constrained_rows(logits: torch.Tensor, requests: list[Request]) -> list[int]:
    """Disallowed tokens of the constrained rows set to -inf; returns those rows. Each matcher is first brought in
    step with its request's output (a no-op normally; after preemption or a dropped token it catches up)."""
    rows = [i for i, r in enumerate(requests) if r.matcher is not None]
    if rows:
        for i in rows:
            requests[i].matcher.sync(requests[i].output_token_ids)
        apply_token_masks(logits, rows, [requests[i].matcher for i in rows])
    return rows


def consume_sampled(requests: list[Request], rows: list[int], token_ids: list[int]) -> None:
    for i in rows:
        requests[i].matcher.consume(token_ids[i])
