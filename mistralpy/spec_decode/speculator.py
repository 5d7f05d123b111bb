"""Speculator: before each step, the draft tokens of the running requests that decode; after it, the counts of what
was proposed, accepted and emitted (for /metrics and bench)."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.request import Request
from .config import SpeculativeConfig
from .ngram_proposer import NgramProposer


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
    def __init__(self, config: SpeculativeConfig, max_model_len: int) -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.proposer = NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)
        self.stats = SpecDecodeStats()

    def propose(self, running: list[Request]) -> None:
        """Set each running request's spec_token_ids: drafts where it decodes (one token left to compute) and may
        speculate, else none. Never more than could be emitted before max_tokens or the context's end."""
        for req in running:
            req.spec_token_ids = self._drafts(req)

    def _drafts(self, req: Request) -> list[int]:
        # Structured requests do not speculate yet: their masks depend on the drafts before them (RequestMatcher).
        if req.matcher is not None or req.num_tokens - req.num_computed_tokens != 1:
            return []
        k = min(self.config.num_speculative_tokens, self.max_model_len - req.num_tokens - 1)
        max_tokens = req.sampling_params.max_tokens
        if max_tokens is not None:
            k = min(k, max_tokens - len(req.output_token_ids) - 1)
        return self.proposer.propose(req.all_token_ids, k)

    def record(self, num_drafts: int, num_emitted: int) -> None:
        """One request's verify step: num_drafts tokens proposed, num_emitted tokens it produced."""
        self.stats.num_drafts += 1
        self.stats.num_draft_tokens += num_drafts
        self.stats.num_accepted_tokens += num_emitted - 1
        self.stats.num_emitted_tokens += num_emitted
