"""mistral.rs's non-granular X-LoRA scalings (`tgt_non_granular_index` N): a request's scalings are computed per token
until it has fed N completion tokens back (its first N decode steps), then the last of them (the token at position
prompt length + N - 1) is fixed for every later token, whose steps skip the scaling pass. mistral.rs keeps that row
per model and runs one sequence at a time; here each request keeps its own, so X-LoRA requests still batch. A step
that computes the token at prompt length + N - 1 (again: a rejected draft, a preempted request) records its row anew.

The real pass of a fixed token depends on the request's prompt length, not only on the tokens before it, so its K/V
must not be shared: a request's prefix-cache blocks stop before its first fixed token (`Request.cache_limit`), on
both sides, writing and reading. The blocks before it hold granular K/V (both passes), the same for any request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ...engine.request import Request


@dataclass
class StepPlan:
    """One step's use of fixed rows: `scaling_keep` the tokens the scaling pass runs on (X-LoRA requests not wholly
    fixed in this step); `fixed` the tokens whose scalings are a fixed row, `source` that row's index in
    cat(this step's scalings, `known`); `records`: (request, token index) whose row becomes fixed after this step."""

    scaling_keep: torch.Tensor
    fixed: torch.Tensor
    source: torch.Tensor
    known: torch.Tensor | None
    records: list[tuple[Request, int]]

    def apply(self, scalings: torch.Tensor) -> torch.Tensor:
        """(T, LoRA layers, adapters) -> the same with the fixed tokens' rows put in."""
        if not bool(self.fixed.any()):
            return scalings
        table = scalings if self.known is None else torch.cat([scalings, self.known])
        out = scalings.clone()
        out[self.fixed] = table[self.source[self.fixed]]
        return out


class NonGranularScalings:
    def __init__(self, tgt_non_granular_index: int) -> None:
        self.n = tgt_non_granular_index
        self.rows: dict[str, tuple[Request, torch.Tensor]] = {}  # request id -> (request, its fixed row)

    def plan(self, order) -> StepPlan:
        """`order`: the step's ScheduledRequests, in the order of its tokens; X-LoRA requests have lora_slot 0."""
        self.rows = {k: v for k, v in self.rows.items() if not v[0].is_finished}
        total = sum(s.num_new_tokens for s in order)
        plan = StepPlan(torch.zeros(total, dtype=torch.bool), torch.zeros(total, dtype=torch.bool),
                        torch.zeros(total, dtype=torch.long), None, [])  # fmt: skip
        known, offset = [], 0
        for s in order:
            if s.request.lora_slot == 0:
                self._plan_request(plan, known, s.request, offset, s.start, s.num_new_tokens)
            offset += s.num_new_tokens
        plan.known = torch.stack(known) if known else None
        return plan

    def _plan_request(self, plan: StepPlan, known: list, req: Request, offset: int, start: int, n: int) -> None:
        threshold = req.num_prompt_tokens + self.n
        req.cache_limit = threshold
        plan.scaling_keep[offset : offset + n] = start < threshold
        if start <= threshold - 1 < start + n:
            plan.records.append((req, offset + threshold - 1 - start))
        first = max(start, threshold)
        if first >= start + n:
            return  # none of this step's tokens is fixed
        span = slice(offset + first - start, offset + n)
        plan.fixed[span] = True
        if start < threshold:  # the row is this step's own (the latest: a rejected draft is computed again)
            plan.source[span] = offset + threshold - 1 - start
        elif req.request_id in self.rows:
            plan.source[span] = len(plan.fixed) + len(known)
            known.append(self.rows[req.request_id][1])
        else:
            raise RuntimeError(f"X-LoRA request {req.request_id}: its fixed scalings were lost")

    def record(self, plan: StepPlan, scalings: torch.Tensor) -> None:
        """After the step: the rows that became fixed in it (`scalings`: the step's, float32)."""
        for req, index in plan.records:
            self.rows[req.request_id] = (req, scalings[index].clone())
