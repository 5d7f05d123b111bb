"""Speculator: before each step, the draft tokens of the running requests that decode (n-gram lookup or a draft
model); after it, the counts of what was proposed, accepted and emitted (for /metrics and bench)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..engine.request import Request
from .adaptive_k import AdaptiveK
from .config import SpeculativeConfig
from .draft_model import load_draft_model
from .draft_proposer import DraftProposer
from .ngram_proposer import NgramProposer


class EngineParts(Protocol):
    """What a speculator is built from: the engine's (a protocol, so that this package never imports the engine)."""

    tokenizer: Any
    model_config: Any
    dtype: Any
    block_manager: Any
    threads: Any
    scheduler_config: Any
    max_model_len: int
    placement: Any  # device.Placement: the draft model runs where the target does


@dataclass
class SpecDecodeStats:
    num_drafts: int = 0  # verify steps of a request with at least one draft token
    num_draft_tokens: int = 0  # proposed
    num_accepted_tokens: int = 0  # drafts equal to the token the target drew in their place
    num_emitted_tokens: int = 0  # tokens verify steps produced: accepted + one drawn by the target each

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens a verify step produced on average (1 + accepted drafts): vLLM's mean acceptance length."""
        return self.num_emitted_tokens / self.num_drafts if self.num_drafts else 0.0


class Speculator:
    def __init__(self, config: SpeculativeConfig, max_model_len: int, draft: DraftProposer | None = None) -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.proposer = NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)
        self.draft = draft
        self.stats = SpecDecodeStats()
        self.policy = AdaptiveK(config.num_speculative_tokens) if config.adaptive_k else None
        self._step_end: float | None = None  # a draft model's measured cost: adaptive K's draft_cost

    def propose(self, running: list[Request]) -> None:
        """Set each running request's spec_token_ids: drafts where it decodes (one token left to compute) and may
        speculate, else none. Never more than could be emitted before max_tokens or the context's end."""
        for req in running:
            req.spec_token_ids = []
        if self.policy is not None:
            self.policy.forget({req.request_id for req in running})
        requests = [req for req in running if _decodes(req)]
        ks = [self._k(req, len(requests)) for req in requests]
        if self.draft is None:
            drafts = [self.proposer.propose(req.all_token_ids, k) for req, k in zip(requests, ks, strict=True)]
        else:
            self.draft.forget({req.request_id for req in running})
            started = time.perf_counter()
            drafts = self.draft.propose(requests, ks, reserve=len(running))
            self._measure(started)
        for req, tokens in zip(requests, drafts, strict=True):
            req.spec_token_ids = tokens

    def _measure(self, started: float) -> None:
        """A draft token's cost for adaptive K: one single-token pass of the draft against one step of the target
        (the time from the end of one proposal to the start of the next). Catch-up passes are left out: in steady
        speculation they are as short, after idle steps they are the probe's price (AdaptiveK.probe_ceiling)."""
        now = time.perf_counter()
        passes = self.draft.decode_passes
        if self.policy is not None and passes and self._step_end is not None:
            ratio = self.draft.decode_seconds / passes / max(started - self._step_end, 1e-6)
            self.policy.draft_cost += 0.2 * (ratio - self.policy.draft_cost)
        self._step_end = now

    def _k(self, req: Request, batch_size: int) -> int:
        k = min(self.config.num_speculative_tokens, self.max_model_len - req.num_tokens - 1)
        max_tokens = req.sampling_params.max_tokens
        if max_tokens is not None:
            k = min(k, max_tokens - len(req.output_token_ids) - 1)
        if k > 0 and self.policy is not None:
            k = min(k, self.policy.k(req.request_id, batch_size))
        return max(k, 0)

    def record(self, request_id: str, num_drafts: int, num_emitted: int) -> None:
        """One request's verify step: num_drafts tokens proposed, num_emitted tokens it produced."""
        if self.policy is not None:
            self.policy.record(request_id, num_drafts, num_emitted - 1)
        self.stats.num_drafts += 1
        self.stats.num_draft_tokens += num_drafts
        self.stats.num_accepted_tokens += num_emitted - 1
        self.stats.num_emitted_tokens += num_emitted


def _decodes(req: Request) -> bool:
    # Structured requests do not speculate yet: their masks depend on the drafts before them (RequestMatcher).
    return req.matcher is None and req.num_tokens - req.num_computed_tokens == 1


def make_speculator(config: SpeculativeConfig, engine: EngineParts) -> Speculator:
    """The engine's speculator; a draft model is loaded here, its tokenizer checked against the engine's."""
    draft = None
    if config.method == "draft_model":
        model = load_draft_model(
            config.model, config.quantization, engine.tokenizer, engine.model_config.vocab_size, engine.dtype,
            engine.block_manager.num_blocks, engine.block_manager.block_size, engine.threads.update, engine.placement,
        )  # fmt: skip
        draft = DraftProposer(model, engine.block_manager, engine.scheduler_config.max_num_batched_tokens)
    return Speculator(config, engine.max_model_len, draft)
