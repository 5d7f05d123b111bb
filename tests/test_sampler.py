import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch

from mistralpy.engine.request import Request
from mistralpy.engine.sampler import (
    Sampler,
    apply_top_k,
    apply_top_p,
    compute_prompt_logprobs,
    sample_random,
)
from mistralpy.sampling_params import SamplingParams

VOCAB = 32


def make_request(
    params: SamplingParams, prompt: list[int] | None = None, output: list[int] | None = None, eos: int = 0
) -> Request:
    request = Request(
        request_id="r", prompt_token_ids=prompt or [1], sampling_params=params, eos_token_ids=frozenset({eos})
    )
    request.output_token_ids = list(output or [])
    return request


def random_logits(rows: int, vocab: int = VOCAB, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def test_empty_batch() -> None:
    out = Sampler().sample(torch.empty(0, VOCAB), [])
    assert out.token_ids == [] and out.logprobs == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_is_argmax(dtype: torch.dtype) -> None:
    logits = random_logits(8).to(dtype)
    requests = [make_request(SamplingParams(temperature=0.0, seed=i)) for i in range(4)]
    requests += [make_request(SamplingParams(top_k=1, temperature=0.9)) for _ in range(4)]
    out = Sampler().sample(logits, requests)
    assert out.token_ids == logits.float().argmax(dim=1).tolist()
    assert out.logprobs == [None] * 8
    assert all(r.generator is None for r in requests)  # greedy rows never draw


def test_greedy_rows_in_a_mixed_batch() -> None:
    logits = random_logits(6)
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=1)] * 3
    out = Sampler().sample(logits, [make_request(p) for p in params])
    argmax = logits.argmax(dim=1).tolist()
    assert [out.token_ids[i] for i in (0, 2, 4)] == [argmax[i] for i in (0, 2, 4)]


def test_sampler_consumes_float32_logits_and_copies_others() -> None:
    """The step's float32 logits are worked on in place (no copy raises the step's peak memory); bf16 or strided
    logits are copied, and draw the same tokens."""
    params = SamplingParams(temperature=0.5, top_k=3, top_p=0.5, min_p=0.1, logit_bias={1: 9.0}, repetition_penalty=2)
    tokens = []
    for logits in (random_logits(2).bfloat16(), random_logits(2).bfloat16().float(), random_logits(1).expand(2, -1)):
        before = logits.clone()
        requests = [make_request(dataclasses.replace(params, seed=i), prompt=[1, 2]) for i in range(2)]
        tokens.append(Sampler().sample(logits, requests).token_ids)
        assert torch.equal(logits, before) == (logits.dtype != torch.float32 or not logits.is_contiguous())
    assert tokens[0] == tokens[1]


def allowed_tokens(row: np.ndarray, temperature: float, top_k: int, top_p: float, min_p: float) -> set[int]:
    """Independent float64 reference: top-k, then top-p on the renormalised rest, then min-p."""
    order = np.argsort(-row / temperature)
    probs = np.exp(row / temperature - row.max() / temperature)
    keep = list(order[:top_k] if top_k > 0 else order)
    kept_probs = probs[keep] / probs[keep].sum()
    cutoff = int(np.searchsorted(np.cumsum(kept_probs), top_p)) + 1
    keep, kept_probs = keep[:cutoff], kept_probs[:cutoff]
    return {int(t) for t, p in zip(keep, kept_probs, strict=True) if p >= min_p * kept_probs.max()}


FILTERS = [
    dict(top_k=5),
    dict(top_p=0.6),
    dict(min_p=0.2),
    dict(top_k=10, top_p=0.8, min_p=0.05),
    dict(top_k=-1, top_p=0.95),
]


@pytest.mark.parametrize("filters", FILTERS)
def test_filters_never_sample_outside_the_allowed_set(filters: dict) -> None:
    torch.manual_seed(0)
    row = random_logits(1, seed=3)[0]
    temperature = 0.8
    params = SamplingParams(temperature=temperature, **filters)
    draws = 4000
    out = Sampler().sample(row.expand(draws, VOCAB), [make_request(params) for _ in range(draws)])
    allowed = allowed_tokens(row.double().numpy(), temperature, params.top_k, params.top_p, params.min_p)
    assert 1 < len(allowed) < VOCAB
    seen = set(out.token_ids)
    assert seen <= allowed
    assert len(seen) >= min(len(allowed), 3)  # filtering did not collapse to a single token


# peaked: the set is among the first 256 candidates; flatter: among the first 4096; flat: a full sort
@pytest.mark.parametrize("scale, size", [(8.0, (1, 256)), (0.6, (256, 4096)), (0.05, (4096, 5000))])
def test_top_p_keeps_the_reference_set_over_a_large_vocabulary(scale: float, size: tuple[int, int]) -> None:
    rows, vocab, ps = 3, 5000, [0.9, 0.5, 1.0]
    logits = random_logits(rows, vocab, seed=5, scale=scale)
    filtered = logits.clone()
    apply_top_p(filtered, ps)
    sizes = []
    for row, p in enumerate(ps):
        kept = set(torch.isfinite(filtered[row]).nonzero().flatten().tolist())
        expected = set(range(vocab)) if p == 1.0 else allowed_tokens(logits[row].double().numpy(), 1.0, 0, p, 0.0)
        assert kept == expected
        sizes.append(len(kept))
    assert size[0] <= sizes[0] < size[1]  # the case is the one it names


def test_top_k_candidates_draw_what_the_whole_vocabulary_draws() -> None:
    """Rows with a small top_k are filtered and drawn among their top-k tokens: with the same seeds, the tokens equal
    those of the whole-vocabulary path (top-k as a mask), for every mix of filters."""
    filters = [dict(top_k=40), dict(top_k=40, top_p=0.9), dict(top_k=5, min_p=0.1), dict(top_k=300, top_p=0.5),
               dict(top_k=1000, top_p=0.95, min_p=0.05, temperature=1.3), dict(top_k=2, temperature=0.3)]  # fmt: skip

    def requests(top_k: bool) -> list:
        return [
            make_request(SamplingParams(**{"temperature": 0.8, **f, **({} if top_k else {"top_k": 0})}, seed=10 + i))
            for i, f in enumerate(filters)
        ]

    # the whole-vocabulary path: no top_k parameter, the top-k applied as a mask beforehand
    fast, whole = requests(top_k=True), requests(top_k=False)
    for step in range(20):
        logits = random_logits(len(filters), vocab=5000, seed=step, scale=3.0)
        masked = logits.clone()
        apply_top_k(masked, [f["top_k"] for f in filters])
        assert sample_random(logits, fast).tolist() == sample_random(masked, whole).tolist(), step


def test_top_k_tied_at_its_boundary_keeps_the_ties() -> None:
    """top-k keeps every token tied with the k-th: such a row is drawn over the whole vocabulary."""
    row = torch.full((1, 100), -5.0)
    row[0, [3, 50, 70]] = 2.0  # k = 2: the 2nd and the 3rd largest tie
    draws = 600
    out = Sampler().sample(row.expand(draws, 100), [make_request(SamplingParams(top_k=2)) for _ in range(draws)])
    assert set(out.token_ids) == {3, 50, 70}


def test_same_seed_same_tokens_whatever_the_batch() -> None:
    row = random_logits(1, vocab=200, seed=1, scale=0.5)[0]
    sampler = Sampler()

    def run(position: int, batch_size: int, steps: int = 25) -> list[int]:
        requests = [make_request(SamplingParams(seed=100 + i)) for i in range(batch_size)]
        requests[position] = make_request(SamplingParams(seed=7, top_p=0.9))
        for i in range(batch_size):
            if i != position and i % 2:
                requests[i] = make_request(SamplingParams(temperature=0.5))  # unseeded, default generator
        tokens = []
        for _ in range(steps):
            logits = random_logits(batch_size, vocab=200, seed=len(tokens) + 50)
            logits[position] = row
            tokens.append(sampler.sample(logits, requests).token_ids[position])
        return tokens

    alone = run(0, 1)
    assert alone == run(2, 5) == run(6, 7)
    assert len(set(alone)) > 1


def test_different_seeds_differ() -> None:
    row = torch.zeros(1, 1000)
    sampler = Sampler()
    requests = [make_request(SamplingParams(seed=s)) for s in (1, 2)]
    draws = [[sampler.sample(row.clone(), [r]).token_ids[0] for _ in range(10)] for r in requests]
    assert draws[0] != draws[1]
    assert all(isinstance(r.generator, torch.Generator) for r in requests)


def test_logprobs_are_raw_with_true_ranks() -> None:
    logits = random_logits(3, vocab=20, seed=8)
    raw = torch.log_softmax(logits, dim=1)
    fifth_best = int(raw[0].argsort(descending=True)[4])
    requests = [
        make_request(SamplingParams(temperature=0, logprobs=3, logit_bias={fifth_best: 100.0})),
        make_request(SamplingParams(temperature=0, logprobs=0)),
        make_request(SamplingParams(temperature=0)),
    ]
    out = Sampler().sample(logits, requests)
    assert out.token_ids[0] == fifth_best
    first = out.logprobs[0]
    assert list(first)[0] == fifth_best and first[fifth_best].rank == 5
    assert first[fifth_best].logprob == pytest.approx(raw[0, fifth_best].item(), abs=1e-5)
    top3 = raw[0].argsort(descending=True)[:3].tolist()
    assert list(first)[1:] == top3
    for rank, token in enumerate(top3, start=1):
        assert first[token].rank == rank
        assert first[token].logprob == pytest.approx(raw[0, token].item(), abs=1e-5)
    greedy = out.token_ids[1]
    assert out.logprobs[1].keys() == {greedy} and out.logprobs[1][greedy].rank == 1
    assert out.logprobs[2] is None


def test_compute_prompt_logprobs_matches_log_softmax() -> None:
    logits = random_logits(600, vocab=16, seed=9).to(torch.bfloat16)  # more rows than one chunk
    targets = torch.randint(0, 16, (600,), generator=torch.Generator().manual_seed(1)).tolist()
    result = compute_prompt_logprobs(logits, targets, num_logprobs=2)
    raw = torch.log_softmax(logits.float(), dim=1)
    assert len(result) == 600
    for pos in (0, 511, 512, 599):
        entry, target = result[pos], targets[pos]
        assert entry[target].logprob == pytest.approx(raw[pos, target].item(), abs=1e-5)
        assert entry[target].rank == int((raw[pos] > raw[pos, target]).sum()) + 1
        top2 = raw[pos].argsort(descending=True)[:2].tolist()
        assert set(entry) == {target, *top2}
        assert [entry[t].rank for t in top2] == [1, 2]
    with pytest.raises(ValueError):
        compute_prompt_logprobs(logits, targets[:-1], 1)


def chi_square(counts: Counter, expected: np.ndarray) -> float:
    observed = np.array([counts.get(i, 0) for i in range(len(expected))])
    return float(((observed - expected) ** 2 / expected).sum())


# 99.9th percentile of chi-square with 5 degrees of freedom.
CHI2_5_DOF_999 = 20.52


def test_temperature_frequencies_match_softmax() -> None:
    torch.manual_seed(1234)
    row = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0, 0.2])
    temperature, draws = 0.7, 20000
    requests = [make_request(SamplingParams(temperature=temperature)) for _ in range(draws)]
    out = Sampler().sample(row.expand(draws, 6), requests)
    expected = torch.softmax(row.double() / temperature, dim=0).numpy() * draws
    assert chi_square(Counter(out.token_ids), expected) < CHI2_5_DOF_999


def test_seeded_draws_follow_the_distribution() -> None:
    row = torch.tensor([[1.0, 0.5, 0.0, -0.5, -1.0, 0.2]])
    request, sampler, draws = make_request(SamplingParams(temperature=1.3, seed=11)), Sampler(), 3000
    counts = Counter(sampler.sample(row.clone(), [request]).token_ids[0] for _ in range(draws))
    expected = torch.softmax(row[0].double() / 1.3, dim=0).numpy() * draws
    assert chi_square(counts, expected) < CHI2_5_DOF_999


@pytest.mark.parametrize("u, token", [(0.0, 2), (0.5, 3), (0.8, 4), (1.0 - 2.0**-24, 5)])
def test_draw_ends_never_land_on_excluded_tokens(monkeypatch, u: float, token: int) -> None:
    """The draw takes the first token whose cumulative probability exceeds u * total: u = 0 gives the first allowed
    token, and u just below 1 (where u * total may round up to the total) the last, never the excluded ones around."""
    row = torch.full((1, 10), float("-inf"))
    row[0, 2:6] = torch.tensor([0.0, 1.0, 0.5, 0.2])
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.full(shape, u))
    requests = [make_request(SamplingParams(temperature=1.0))]
    assert Sampler().sample(row, requests).token_ids == [token]


def test_a_row_without_finite_logits_still_gives_a_token_in_the_vocabulary() -> None:
    row = torch.full((1, VOCAB), float("-inf"))
    token = Sampler().sample(row, [make_request(SamplingParams(temperature=0.7))]).token_ids[0]
    assert 0 <= token < VOCAB
