"""Continuous batching under a token budget, with chunked prefill, prefix caching and preemption by recompute.

Every request advances by num_computed_tokens: a prompt chunk, a prefix-cache hit and a decode step are the same
thing with different numbers. Running requests are served first, oldest first; when blocks run out the newest
running request is preempted (its blocks freed, its tokens recomputed later). Waiting requests join every step.
A prompt's images are never split between chunks: their tokens attend to each other both ways, so each image's tokens
are computed in one step (RequestImages.fit_chunk ends a chunk before an image or after it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..config import SchedulerConfig
from .block_manager import BlockManager
from .request import Request, RequestStatus


@dataclass
class ScheduledRequest:
    request: Request
    num_new_tokens: int
    start: int  # num_computed_tokens before this step
    spec_token_ids: list[int] = field(default_factory=list)  # draft tokens computed after the last known token

    @property
    def samples(self) -> bool:
        """True when this step computes the request's last known token, so a new token gets sampled."""
        return self.start + self.num_new_tokens - len(self.spec_token_ids) == self.request.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class SchedulerStats:
    num_preemptions: int = 0
    num_prompt_tokens_computed: int = 0
    num_generation_tokens: int = 0
    max_batch_size: int = 0


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.stats = SchedulerStats()

    def add_request(self, request: Request) -> None:
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        budget = self._schedule_running(out, budget)
        if not out.preempted:
            self._schedule_waiting(out, budget)
        self.stats.max_batch_size = max(self.stats.max_batch_size, len(out.scheduled))
        return out

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_left = req.num_tokens - req.num_computed_tokens
            drafts = req.spec_token_ids if num_left == 1 else []
            num_new = min(num_left + len(drafts), budget)
            drafts = drafts[: num_new - num_left]  # a verify step is a prefill of 1 + K tokens: the budget counts them
            if req.images is not None and not drafts:  # an image's tokens all in one chunk (two-way attention)
                num_new = req.images.fit_chunk(req.num_computed_tokens, num_new, budget)
                if num_new == 0:  # the rest of its image does not fit this step's budget: next step
                    i += 1
                    continue
            if drafts and not self.block_manager.allocate_slots(req, num_new):
                drafts, num_new = [], num_left  # no room for drafts: decode plainly rather than preempt for them
            while not self.block_manager.allocate_slots(req, num_new):
                victim = self.running.pop()
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is req:
                    return budget
            out.scheduled.append(ScheduledRequest(req, num_new, req.num_computed_tokens, drafts))
            budget -= num_new
            i += 1
        return budget

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting[0]
            pooled = req.pooling is not None  # all of its hidden states are pooled: no prefix hits, no chunks
            computed = [] if pooled else self.block_manager.get_computed_blocks(req)
            num_new = req.num_tokens - len(computed) * self.block_manager.block_size
            if pooled and num_new > budget and out.scheduled:
                break  # a prompt over the whole budget runs alone
            num_new = num_new if pooled else min(num_new, budget)
            if req.images is not None:  # an image's tokens all in one chunk (two-way attention among them)
                num_new = req.images.fit_chunk(len(computed) * self.block_manager.block_size, num_new, budget)
                if num_new == 0:
                    break
            if not self.block_manager.allocate_slots(req, num_new, computed):
                break
            self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            req.num_cached_tokens = len(computed) * self.block_manager.block_size
            self.running.append(req)
            out.scheduled.append(ScheduledRequest(req, num_new, req.num_computed_tokens))
            budget -= num_new

    def _preempt(self, req: Request) -> None:
        self.block_manager.free(req)
        req.num_computed_tokens = 0
        req.spec_token_ids = []
        req.status = RequestStatus.WAITING
        req.num_preemptions += 1
        self.stats.num_preemptions += 1
        self.waiting.appendleft(req)

    def update_from_output(
        self, out: SchedulerOutput, sampled: dict[str, int], verified: dict[str, list[int]] | None = None
    ) -> list[Request]:
        """Advance computed counts, append sampled tokens, finish requests that hit a stop condition.
        Returns the requests that received a new token this step. A request that verified draft tokens gets its
        tokens from `verified` through append_token, one at a time, by the caller; here its rejected drafts' slots
        are rolled back (num_computed_tokens moved back, blocks past its tokens freed)."""
        advanced = []
        for s in out.scheduled:
            req = s.request
            req.num_computed_tokens += s.num_new_tokens
            prompt_done = min(req.num_computed_tokens, req.num_prompt_tokens)
            self.stats.num_prompt_tokens_computed += max(0, prompt_done - s.start)
            if req.pooling is not None:  # its embedding was made in this step
                self.finish_request(req, RequestStatus.FINISHED_STOPPED)
                continue
            req.spec_token_ids = []
            emitted = verified.get(req.request_id) if verified else None
            if emitted is not None:
                # K/V stays valid for the last known token and the accepted drafts: len(emitted) - 1 of them
                req.num_computed_tokens = s.start + len(emitted)
                self.block_manager.trim(req, req.num_computed_tokens + 1)
                continue
            token = sampled.get(req.request_id)
            if token is None:
                continue
            self.append_token(req, token)
            advanced.append(req)
        return advanced

    def append_token(self, req: Request, token: int) -> None:
        """One new output token; the request is finished if it hits a stop condition."""
        req.output_token_ids.append(token)
        self.stats.num_generation_tokens += 1
        status = self._check_stop(req, token)
        if status is not None:
            self.finish_request(req, status)

    def _check_stop(self, req: Request, token: int) -> RequestStatus | None:
        params = req.sampling_params
        n_out = len(req.output_token_ids)
        if n_out >= params.min_tokens:
            if not params.ignore_eos and token in req.eos_token_ids:
                return RequestStatus.FINISHED_STOPPED
            if token in params.stop_token_ids:
                req.stop_reason = token
                return RequestStatus.FINISHED_STOPPED
        if params.max_tokens is not None and n_out >= params.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        if req.num_tokens >= self.config.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None

    def finish_request(self, req: Request, status: RequestStatus) -> None:
        if req.is_finished:
            return
        if req.status == RequestStatus.RUNNING:
            self.running.remove(req)
        elif req.status == RequestStatus.WAITING:
            self.waiting.remove(req)
        req.status = status
        self.block_manager.free(req)
        self.requests.pop(req.request_id, None)

    def abort_request(self, request_id: str) -> bool:
        req = self.requests.get(request_id)
        if req is None:
            return False
        self.finish_request(req, RequestStatus.FINISHED_ABORTED)
        return True
