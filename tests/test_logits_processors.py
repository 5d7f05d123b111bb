"""Logits processors (engine/logits_processors.py): penalties, logit bias and min_tokens, exactly, and how they
steer greedy choices."""

from collections import Counter

import pytest
import torch

from mistralpy.engine.logits_processors import apply_logits_processors
from mistralpy.engine.sampler import Sampler
from mistralpy.sampling_params import SamplingParams

from .test_sampler import make_request, random_logits


def expected_penalised(row: list[float], prompt: list[int], output: list[int], params: SamplingParams) -> list[float]:
    out = list(row)
    counts = Counter(output)
    for token in set(prompt) | set(output):
        rep = params.repetition_penalty
        out[token] = out[token] / rep if out[token] > 0 else out[token] * rep
    for token, count in counts.items():
        out[token] -= params.frequency_penalty * count + params.presence_penalty
    return out


def test_penalties_change_logits_exactly() -> None:
    logits = random_logits(3, vocab=10, seed=5)
    prompt, output = [1, 2, 2, 7], [2, 3, 3, 3, 9]
    params = [
        SamplingParams(repetition_penalty=1.5, frequency_penalty=0.5, presence_penalty=0.25),
        SamplingParams(repetition_penalty=0.8),
        SamplingParams(),
    ]
    requests = [make_request(p, prompt=prompt, output=output) for p in params]
    processed = apply_logits_processors(logits.clone(), requests)
    for i, p in enumerate(params):
        expected = expected_penalised(logits[i].tolist(), prompt, output, p)
        assert processed[i].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(processed[2], logits[2])


def test_logit_bias_is_added_and_steers_greedy() -> None:
    logits = random_logits(2, vocab=10, seed=6)
    bias = {3: 100.0, 4: -2.5, 99: 5.0}  # 99 is outside this vocabulary and is ignored
    requests = [make_request(SamplingParams(temperature=0, logit_bias=bias)), make_request(SamplingParams())]
    processed = apply_logits_processors(logits.clone(), requests)
    expected = logits[0].clone()
    expected[3] += 100.0
    expected[4] -= 2.5
    assert torch.allclose(processed[0], expected)
    assert torch.equal(processed[1], logits[1])
    assert Sampler().sample(logits, requests).token_ids[0] == 3


def test_min_tokens_masks_eos_and_stop_tokens() -> None:
    logits = torch.zeros(4, 10)
    params = SamplingParams(min_tokens=2, stop_token_ids=[5])
    ignore = SamplingParams(min_tokens=2, stop_token_ids=[5], ignore_eos=True)
    requests = [
        make_request(params, output=[1], eos=9),
        make_request(params, output=[1, 2], eos=9),  # min_tokens reached: nothing masked
        make_request(ignore, output=[], eos=9),
        make_request(SamplingParams(ignore_eos=True), eos=9),
    ]
    processed = apply_logits_processors(logits.clone(), requests)
    masked = [set(torch.nonzero(torch.isinf(row)).flatten().tolist()) for row in processed]
    assert masked == [{5, 9}, set(), {5}, set()]


def test_min_tokens_steers_greedy_away_from_eos() -> None:
    logits = torch.tensor([[0.0, 1.0, 5.0]])
    request = make_request(SamplingParams(temperature=0, min_tokens=1), eos=2)
    assert Sampler().sample(logits, [request]).token_ids == [1]
