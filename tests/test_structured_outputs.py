"""Structured output through llguidance: every constrained output checked by an independent parser (json + jsonschema,
re.fullmatch, list membership), on the tiny random Llama and on the embedded model, which cannot write valid JSON
unconstrained."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.structured import StructuredOutputsParams

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
    },
    "required": ["name", "age", "color", "tags"],
    "additionalProperties": False,
}
REGEX = r"[a-z]{2,5}-[0-9]{1,3}"
CHOICES = ["yes", "no", "it depends"]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return LLM(str(tiny_llama[1]), dtype="float32", block_size=4)


@pytest.fixture(scope="module")
def embedded():
    return LLM()


@pytest.fixture(params=["tiny", "embedded"])
def llm(request):
    return request.getfixturevalue(request.param)


def _texts(llm: LLM, spec: StructuredOutputsParams, n: int, max_tokens: int = 120) -> list[str]:
    params = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, structured_outputs=spec)
    outputs = llm.generate(["Here is the answer:"], params)[0].outputs
    assert [o.finish_reason for o in outputs] == ["stop"] * n
    return [o.text for o in outputs]


def _without_strings(text: str) -> str:
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def test_json_schema_outputs_validate(llm):
    for text in _texts(llm, StructuredOutputsParams(json=SCHEMA), 20):
        value = json.loads(text)
        jsonschema.validate(value, SCHEMA)
        # compact whitespace: the text is json.dumps's, up to how strings escape their characters
        assert _without_strings(text) == _without_strings(json.dumps(value))


def test_regex_outputs_match(llm):
    for text in _texts(llm, StructuredOutputsParams(regex=REGEX), 20, max_tokens=20):
        assert re.fullmatch(REGEX, text), text


def test_choice_outputs_are_choices(llm):
    texts = _texts(llm, StructuredOutputsParams(choice=CHOICES), 20, max_tokens=10)
    assert set(texts) <= set(CHOICES)


def test_json_object_outputs_are_objects(tiny):
    spec = StructuredOutputsParams(json_object=True)
    params = SamplingParams(n=20, temperature=1.0, max_tokens=200, structured_outputs=spec)
    for out in tiny.generate(["{"], params)[0].outputs:
        # any object, of any size: the budget may end it, else it parses
        if out.finish_reason == "stop":
            assert isinstance(json.loads(out.text), dict)
        else:
            assert out.finish_reason == "length" and out.text.startswith("{")


def test_lark_grammar(tiny):
    grammar = 'start: "(" num ("," num)* ")"\nnum: /[0-9]/'
    for text in _texts(tiny, StructuredOutputsParams(grammar=grammar), 10, max_tokens=60):
        assert re.fullmatch(r"\([0-9](,[0-9])*\)", text), text


def test_budget_ends_output_with_length(tiny):
    spec = StructuredOutputsParams(regex="a{50}")
    out = tiny.generate(["x"], SamplingParams(max_tokens=3, temperature=0, structured_outputs=spec))[0].outputs[0]
    assert out.finish_reason == "length" and re.fullmatch("a+", out.text)


def test_constrained_and_free_requests_in_one_batch(tiny):
    free = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    constrained = SamplingParams(
        temperature=0, max_tokens=10, structured_outputs=StructuredOutputsParams(choice=CHOICES)
    )
    alone = tiny.generate(["free prompt"], free)[0].outputs[0].token_ids
    outs = tiny.generate(["free prompt", "constrained prompt"], [free, constrained])
    assert outs[0].outputs[0].token_ids == alone  # the mask touches only its own row
    assert outs[1].outputs[0].text in CHOICES


def test_preemption_does_not_feed_a_matcher_twice(tiny_llama):
    spec = StructuredOutputsParams(json=SCHEMA)
    params = [SamplingParams(temperature=1.0, seed=i, max_tokens=120, structured_outputs=spec) for i in range(8)]
    prompts = [f"record {i}:" for i in range(8)]
    roomy = LLM(str(tiny_llama[1]), dtype="float32", block_size=4)
    alone = [roomy.generate([p], [sp])[0].outputs[0].text for p, sp in zip(prompts, params, strict=True)]
    small = LLM(str(tiny_llama[1]), dtype="float32", block_size=4, num_kv_blocks=48, max_model_len=160)
    squeezed = [o.outputs[0].text for o in small.generate(prompts, params)]
    assert small.engine.scheduler.stats.num_preemptions > 0
    assert squeezed == alone
    for text in squeezed:
        jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize(
    "fields, quoted",
    [
        ({"json": {"type": "object", "properties": {"a": {"type": "nope"}}}}, "nope"),
        ({"json": {"type": "integer", "minimum": 5, "maximum": 1}}, "minimum (5) is greater than maximum (1)"),
        ({"json": {"type": "string", "format": "nonesuch"}}, "Unknown format: nonesuch"),
        ({"regex": "a(b"}, "unclosed group"),
        ({"grammar": "start: undefined_rule"}, "undefined_rule"),
        ({"choice": []}, "non-empty"),
        ({}, "exactly one"),
        ({"regex": "a", "choice": ["b"]}, "exactly one"),
    ],
)
def test_invalid_specs_are_invalid_requests(fields, quoted):
    with pytest.raises(InvalidRequestError, match=re.escape(quoted)):
        SamplingParams(structured_outputs=StructuredOutputsParams(**fields))


def test_sampling_params_takes_a_mapping_and_refuses_what_it_cannot_honour():
    params = SamplingParams(structured_outputs={"regex": "[0-9]+"})
    assert isinstance(params.structured_outputs, StructuredOutputsParams)
    with pytest.raises(InvalidRequestError, match="unknown fields"):
        SamplingParams(structured_outputs={"regexp": "x"})
    with pytest.raises(InvalidRequestError, match="ignore_eos"):
        SamplingParams(ignore_eos=True, structured_outputs={"regex": "x"})
    with pytest.raises(InvalidRequestError, match="min_tokens"):
        SamplingParams(min_tokens=2, structured_outputs={"regex": "x"})
