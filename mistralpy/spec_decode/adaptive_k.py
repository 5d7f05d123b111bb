"""Adaptive K: how many draft tokens a request proposes, from its acceptance so far and what a draft token costs.

Each draft is a trial: accepted (1) or the first rejected one (0); drafts after a rejection were never judged. An
exponential moving average of the trials estimates the chance a (next) draft is accepted, alpha. The i-th draft of a
step is accepted with probability alpha^i (all before it must be), and costs `cost`: its draft-model pass, if any,
plus the extra token the target computes for it, as fractions of a plain target step. So K is the largest i with
alpha^i >= cost, capped by num_speculative_tokens. The target's extra token costs more the larger the batch: a
step of one request mostly reads weights (a token is cheap), a large batch's step is mostly compute (a token costs
its share), so speculation backs off as the batch grows. A request at K = 0 proposes one draft every
`probe_every` steps, so that K can grow back when its text becomes predictable; but not where a draft costs
`probe_ceiling` or more: even a request whose drafts were nearly always right would not speculate there, and a
probe after idle steps is dear (the draft model first catches up on every token since its last pass)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _State:
    alpha: float
    idle: int = 0  # steps at K = 0 since the last probe


@dataclass
class AdaptiveK:
    k_max: int
    draft_cost: float = 0.0  # a draft token's proposal, in plain target steps (0 for n-gram lookup)
    # A verified token's compute against a batch-1 step's weight reads. 0.1 (plain decode's share on this project's
    # 2-core machine) still speculated at 32 requests and made them 0.68x: a verify step's tokens run as prefill
    # spans, dearer than batched decode tokens. 0.3 stops speculation from ~14 requests on (docs/BENCHMARKS.md).
    token_compute: float = 0.3
    prior: float = 0.8  # the acceptance a new request starts with
    weight: float = 0.2  # of each trial in the moving average
    probe_every: int = 16
    probe_ceiling: float = 0.9
    states: dict[str, _State] = field(default_factory=dict)

    def cost(self, batch_size: int) -> float:
        """One draft token's cost in a step of batch_size requests, as a fraction of a plain step."""
        compute = batch_size * self.token_compute
        return self.draft_cost + compute / (1.0 + compute)

    def k(self, request_id: str, batch_size: int) -> int:
        """K for the request's next step."""
        state = self.states.setdefault(request_id, _State(self.prior))
        cost, k = self.cost(batch_size), 0
        while k < self.k_max and state.alpha ** (k + 1) >= cost:
            k += 1
        if k > 0:
            state.idle = 0
            return k
        state.idle += 1
        if state.idle >= self.probe_every and cost < self.probe_ceiling:
            state.idle = 0
            return 1
        return 0

    def record(self, request_id: str, num_drafts: int, num_accepted: int) -> None:
        """One verify step: num_accepted drafts kept, then a rejection if any draft was left."""
        state = self.states.setdefault(request_id, _State(self.prior))
        trials = [1.0] * num_accepted + ([0.0] if num_accepted < num_drafts else [])
        for x in trials:
            state.alpha += self.weight * (x - state.alpha)

    def forget(self, keep: set[str]) -> None:
        for request_id in [rid for rid in self.states if rid not in keep]:
            del self.states[request_id]
