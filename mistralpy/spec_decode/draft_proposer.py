"""Draft-model proposals: each speculating request's K tokens drawn greedily from the draft model, batched (one
catch-up pass over the tokens the draft has not seen, then K - 1 single-token passes).

Greedy drafts are point masses q, so verify_rows' acceptance (keep a draft while the target draws it) is exact
rejection sampling: min(1, p/q) = p(draft), and the residual max(0, p - q) is p without the draft.

The draft's K/V of a request lives in the target's blocks for it (draft_model.py). Its last drafts' K/V must be
written before the scheduler allocates the verify step's slots, so the blocks for 1 + K tokens are allocated here,
only while every other running request keeps a free block for its own next token. What the draft cache holds never
changes the output (the target verifies every token); it only makes drafts better or worse."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

from ..engine.block_manager import BlockManager
from ..engine.request import Request
from ..engine.scheduler import ScheduledRequest, SchedulerOutput
from .draft_model import DraftModel


@dataclass
class _Fed:
    """What the draft cache holds for a request: K/V of its first `base` tokens and of `drafts` after them."""

    base: int
    drafts: list[int]
    preemptions: int


class DraftProposer:
    def __init__(self, draft: DraftModel, block_manager: BlockManager, max_batched_tokens: int) -> None:
        self.draft = draft
        self.block_manager = block_manager
        self.max_batched_tokens = max_batched_tokens
        self.fed: dict[str, _Fed] = {}
        self.decode_seconds = 0.0  # of the last propose's single-token passes (a draft token's cost: adaptive K)
        self.decode_passes = 0

    def forget(self, keep: set[str]) -> None:
        """Drop what is known of requests no longer running (finished, aborted, preempted or not yet readmitted)."""
        for request_id in [rid for rid in self.fed if rid not in keep]:
            del self.fed[request_id]

    def propose(self, requests: list[Request], ks: list[int], reserve: int) -> list[list[int]]:
        """Up to ks[i] draft tokens for each decoding request; `reserve`: free blocks left to the running requests."""
        ks = [self._room(req, k, reserve) for req, k in zip(requests, ks, strict=True)]
        active = [(req, k) for req, k in zip(requests, ks, strict=True) if k > 0]
        drafts: dict[str, list[int]] = {req.request_id: [] for req, _ in active}
        self._catch_up([req for req, _ in active], drafts)
        started, self.decode_passes = time.perf_counter(), 0
        for j in range(1, max((k for _, k in active), default=0)):
            feeding = [req for req, k in active if k > j]
            views = [_view(req, drafts[req.request_id]) for req in feeding]
            scheduled = [ScheduledRequest(v, 1, v.num_tokens - 1) for v in views]
            self._draw(scheduled, drafts)
            self.decode_passes += 1
        self.decode_seconds = time.perf_counter() - started
        for req, k in active:
            self.fed[req.request_id] = _Fed(req.num_tokens, drafts[req.request_id][: k - 1], req.num_preemptions)
        return [drafts.get(req.request_id, []) for req in requests]

    def _room(self, req: Request, k: int, reserve: int) -> int:
        """k, capped by the draft's context and by the blocks the verify step's 1 + k slots need (allocated now)."""
        k = min(k, self.draft.max_model_len - req.num_tokens + 1)
        if k <= 0:
            return 0
        bm = self.block_manager
        need = bm.blocks_needed(req.num_computed_tokens + 1 + k) - len(req.block_ids)
        if need > 0 and bm.num_free_blocks - need < reserve:
            k = min(k, len(req.block_ids) * bm.block_size - req.num_computed_tokens - 1)
        if k > 0 and not bm.allocate_slots(req, 1 + k):
            return 0
        return max(k, 0)

    def _catch_up(self, requests: list[Request], drafts: dict[str, list[int]]) -> None:
        """Draft K/V for every token the draft cache lacks, in passes of at most max_batched_tokens; the first
        draft of each request from its last token's logits."""
        start = {req.request_id: self._valid(req) for req in requests}
        while requests:
            budget, scheduled = self.max_batched_tokens, []
            for req in requests:
                n = min(req.num_tokens - start[req.request_id], max(budget, 1))
                scheduled.append(ScheduledRequest(req, n, start[req.request_id]))
                budget -= n
                if budget <= 0:
                    break
            self._draw(scheduled, drafts)
            for s in scheduled:
                start[s.request.request_id] += s.num_new_tokens
            requests = [req for req in requests if start[req.request_id] < req.num_tokens]

    def _valid(self, req: Request) -> int:
        """How many of the request's tokens the draft cache holds K/V for: its drafts that became its tokens count."""
        fed = self.fed.get(req.request_id)
        if fed is None or fed.preemptions != req.num_preemptions:
            return 0
        tokens, valid = req.all_token_ids, fed.base
        for token in fed.drafts:
            if valid >= len(tokens) - 1 or tokens[valid] != token:
                break
            valid += 1
        return min(valid, len(tokens) - 1)

    def _draw(self, scheduled: list[ScheduledRequest], drafts: dict[str, list[int]]) -> None:
        logits = self.draft.runner.last_logits(SchedulerOutput(scheduled))
        for request_id, row in logits.items():
            drafts[request_id].append(int(row[: self.draft.vocab_size].argmax()))


def _view(req: Request, drafts: list[int]) -> Request:
    """The request as if its drafts so far were output: the draft model's next pass reads and extends them."""
    view = copy.copy(req)
    view.output_token_ids = req.output_token_ids + drafts
    return view
