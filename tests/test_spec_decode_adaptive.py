"""Adaptive K: the policy on fixed sequences of acceptance (the expected K from the rule alpha^K >= cost, computed
here in float64 from the moving average written out), and an engine whose drafts never match falling to K = 0."""

from __future__ import annotations

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.spec_decode.adaptive_k import AdaptiveK
from mistralpy.spec_decode.speculator import Speculator

from .test_spec_decode import GREEDY, _assert_no_leak
from .test_spec_decode_draft import _draft, other_tiny  # noqa: F401 (a fixture)


def _expected_k(alpha: float, cost: float, k_max: int) -> int:
    return max([0] + [k for k in range(1, k_max + 1) if alpha**k >= cost])


def test_k_follows_the_acceptance_average():
    policy = AdaptiveK(k_max=4, draft_cost=0.1, token_compute=0.0, prior=0.8, weight=0.2)
    alpha = 0.8
    assert policy.k("a", 1) == _expected_k(alpha, 0.1, 4) == 4
    for accepted in (4, 4, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0):
        policy.record("a", 4, accepted)
        for x in [1.0] * accepted + ([0.0] if accepted < 4 else []):
            alpha += 0.2 * (x - alpha)
        assert policy.states["a"].alpha == pytest.approx(alpha, abs=1e-12)
        assert policy.k("a", 1) == _expected_k(alpha, 0.1, 4)
    assert alpha < 0.1 and policy.k("a", 1) == 0


def test_k_zero_probes_and_grows_back():
    policy = AdaptiveK(k_max=3, draft_cost=0.2, token_compute=0.0, prior=0.05, probe_every=4)
    ks = [policy.k("a", 1) for _ in range(12)]
    assert ks == [0, 0, 0, 1] * 3  # a probe of one draft every 4th step
    for _ in range(12):  # probes accepted: the average climbs back above the cost
        policy.record("a", 1, 1)
    assert policy.k("a", 1) == 3


def test_speculation_backs_off_as_the_batch_grows():
    policy = AdaptiveK(k_max=4, token_compute=0.1, prior=0.8)
    ks = [policy.k(str(b), b) for b in (1, 4, 16, 32, 64, 128)]
    costs = [b * 0.1 / (1 + b * 0.1) for b in (1, 4, 16, 32, 64, 128)]
    assert ks == [_expected_k(0.8, c, 4) for c in costs]
    assert ks[0] == 4 and ks[-1] == 0 and ks == sorted(ks, reverse=True)
    policy.forget({"1"})
    assert set(policy.states) == {"1"}
    # where a draft costs 0.9 of a step or more (here 128 * 0.1 / 13.8 = 0.93), not even probes are drafted
    doubtful = AdaptiveK(k_max=4, token_compute=0.1, prior=0.1)
    assert [doubtful.k("big", 128) for _ in range(40)] == [0] * 40
    assert [doubtful.k("small", 16) for _ in range(32)] == ([0] * 15 + [1]) * 2  # cost 0.62: probes


def test_engine_k_falls_to_zero_when_drafts_never_match(tiny_llama, other_tiny, monkeypatch):  # noqa: F811
    """A draft model that never agrees with the target: after a few verify steps the request stops proposing
    (bar the probes), and its output is the plain one. The draft's measured cost is left out (kept at 0), so that
    acceptance alone brings K down."""
    monkeypatch.setattr(Speculator, "_measure", lambda self, started: None)
    prompt = list(range(100, 120))
    params = SamplingParams(max_tokens=60, **GREEDY)
    plain = LLM(str(tiny_llama[1]), dtype="float32", block_size=4)
    expected = plain.generate([prompt], params)[0].outputs[0].token_ids
    spec = LLM(
        str(tiny_llama[1]), dtype="float32", block_size=4, speculative_config=_draft(other_tiny, k=4, adaptive_k=True)
    )
    engine = spec.engine
    engine.add_request(prompt, params, request_id="r")
    drafted, outputs = [], []
    while engine.has_unfinished_requests():
        before = engine.speculator.stats.num_draft_tokens
        outputs = engine.step() or outputs
        drafted.append(engine.speculator.stats.num_draft_tokens - before)
    assert outputs[0].outputs[0].token_ids == expected
    assert engine.speculator.stats.num_accepted_tokens <= 2
    assert drafted[0] == 0 and drafted[1] == 4  # the prefill step, then the prior's trust: K = 4
    # rejections spend it (each multiplies the average by 0.8; K = 0 below the batch-1 cost, 0.3 / 1.3): K falls to 0
    # within a dozen steps, then stays there but for a probe of one draft every 16th step
    first_zero = drafted.index(0, 1)
    assert drafted[1:first_zero] == sorted(drafted[1:first_zero], reverse=True) and first_zero <= 14, drafted
    tail = drafted[first_zero:]
    assert len(tail) > 30 and max(tail) == 1 and sum(tail) <= len(tail) // 16 + 1, drafted
    _assert_no_leak(spec)
