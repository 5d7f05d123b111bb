import dataclasses
import math

import pytest

from mistralpy.errors import InvalidRequestError
from mistralpy.sampling_params import SamplingParams

INVALID = [
    ("n", 0),
    ("n", 1.5),
    ("n", True),
    ("temperature", -0.1),
    ("temperature", "0.7"),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", None),
    ("top_p", 0.0),
    ("top_p", 1.01),
    ("top_p", "1"),
    ("top_k", -2),
    ("top_k", 2.0),
    ("top_k", True),
    ("min_p", -0.01),
    ("min_p", 1.5),
    ("max_tokens", 0),
    ("max_tokens", -3),
    ("max_tokens", "16"),
    ("min_tokens", -1),
    ("presence_penalty", 2.5),
    ("presence_penalty", -2.01),
    ("frequency_penalty", 3),
    ("frequency_penalty", False),
    ("repetition_penalty", 0.0),
    ("repetition_penalty", -1.0),
    ("logprobs", -1),
    ("logprobs", 21),
    ("logprobs", 1.0),
    ("prompt_logprobs", 21),
    ("prompt_logprobs", -1),
    ("stop", 5),
    ("stop", ["ok", 3]),
    ("stop", ""),
    ("stop", ["a", ""]),
    ("stop", {"a": 1}),
    ("stop_token_ids", [1, "2"]),
    ("stop_token_ids", [1, True]),
    ("stop_token_ids", [-1]),
    ("stop_token_ids", 7),
    ("seed", "42"),
    ("seed", 1.0),
    ("seed", True),
    ("seed", 2**64),
    ("logit_bias", {"abc": 1.0}),
    ("logit_bias", {"-5": 1.0}),
    ("logit_bias", {-5: 1.0}),
    ("logit_bias", {5: math.inf}),
    ("logit_bias", {5: math.nan}),
    ("logit_bias", {5: 100.5}),
    ("logit_bias", {5: -101}),
    ("logit_bias", {5: "1"}),
    ("logit_bias", {5: True}),
    ("logit_bias", [1, 2]),
    ("ignore_eos", 1),
    ("skip_special_tokens", "yes"),
    ("include_stop_str_in_output", None),
]


@pytest.mark.parametrize(("field", "value"), INVALID)
def test_invalid_field_raises_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**{field: value})
    message = str(info.value)
    assert field in message
    assert repr(value) in message


def test_min_tokens_above_max_tokens() -> None:
    with pytest.raises(InvalidRequestError, match="min_tokens"):
        SamplingParams(min_tokens=10, max_tokens=5)
    assert SamplingParams(min_tokens=10, max_tokens=None).min_tokens == 10


def test_defaults_match_vllm() -> None:
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p) == (1, 1.0, 1.0, 0, 0.0)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert (p.max_tokens, p.min_tokens, p.logprobs, p.prompt_logprobs, p.seed) == (16, 0, None, None, None)
    assert p.stop == [] and p.stop_token_ids == [] and p.logit_bias is None
    assert p.skip_special_tokens and not p.ignore_eos and not p.include_stop_str_in_output


def test_normalisation() -> None:
    p = SamplingParams(stop="x", stop_token_ids=(3, 4), logit_bias={"5": 1, 7: -2.5}, temperature=0, top_p=1)
    assert p.stop == ["x"]
    assert p.stop_token_ids == [3, 4]
    assert p.logit_bias == {5: 1.0, 7: -2.5}
    assert isinstance(p.temperature, float) and isinstance(p.top_p, float)
    assert SamplingParams(stop=("a", "b")).stop == ["a", "b"]


def test_normalisation_is_idempotent_under_replace() -> None:
    p = SamplingParams(stop="x", logit_bias={"5": 1.0}, seed=3)
    q = dataclasses.replace(p, temperature=0.5)
    assert q.stop == ["x"] and q.logit_bias == {5: 1.0} and q.seed == 3


@pytest.mark.parametrize("top_k", [-1, 0, 1, 50])
def test_valid_top_k(top_k: int) -> None:
    assert SamplingParams(top_k=top_k).top_k == top_k


def test_boundaries_are_valid() -> None:
    SamplingParams(top_p=1.0, min_p=1.0, presence_penalty=-2, frequency_penalty=2, logprobs=0, prompt_logprobs=20)
    SamplingParams(logit_bias={1: -100, 2: 100}, seed=-1, max_tokens=None, temperature=0.0)


def test_greedy() -> None:
    assert SamplingParams(temperature=0).is_greedy
    assert SamplingParams(top_k=1).is_greedy
    assert not SamplingParams(temperature=0.7, seed=1).is_greedy
    assert not SamplingParams().is_greedy


def test_verify_vocab() -> None:
    SamplingParams(logit_bias={9: 1.0}, stop_token_ids=[9]).verify_vocab(10)
    with pytest.raises(InvalidRequestError, match="logit_bias"):
        SamplingParams(logit_bias={10: 1.0}).verify_vocab(10)
    with pytest.raises(InvalidRequestError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=[1, 12]).verify_vocab(10)
