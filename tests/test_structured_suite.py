"""Structured output on the embedded model at temperature 1: a JSON-schema suite, string formats, regexes, choices and
Lark grammars, every sample checked by an oracle independent of llguidance (jsonschema, RFC 3339 read by the test,
the standard library's parsers of addresses and UUIDs, re.fullmatch, Python's own parser, list membership). Each
sample must finish with "stop" and parse: every case here bounds its output, so the budget never ends one. All cases
are sampled in one batch (one generate call), which costs little more than the longest case alone."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from mistralpy import LLM, SamplingParams

from .structured_cases import CHOICES, FORMAT_ORACLES, LARK, RECORD, REGEXES, SCHEMAS

SAMPLES = 4  # per case: n samples of one request, at temperature 1
RECORD_SAMPLES = 50
VALIDATOR = jsonschema.Draft202012Validator


def _cases() -> dict[str, tuple[dict, int, int]]:
    """case id -> (structured_outputs, n, max_tokens); max_tokens is well above what each case can take."""
    cases = {"record": ({"json": RECORD}, RECORD_SAMPLES, 200)}
    cases.update({f"schema:{k}": ({"json": v}, SAMPLES, 200) for k, v in SCHEMAS.items()})
    cases.update(
        {
            f"format:{k}": ({"json": {"type": "string", "format": k, "maxLength": 40}}, SAMPLES, 120)
            for k in FORMAT_ORACLES
        }
    )
    cases.update({f"regex:{r}": ({"regex": r}, SAMPLES, 40) for r in REGEXES})
    cases.update({f"choice:{k}": ({"choice": v}, 2 * SAMPLES, 16) for k, v in CHOICES.items()})
    # each special choice alone: its escaping in the grammar must give back exactly its text
    cases.update({f"one-choice:{c}": ({"choice": [c]}, 1, 16) for c in CHOICES["special"]})
    cases.update({f"lark:{k}": ({"grammar": g}, SAMPLES, 80) for k, (g, _) in LARK.items()})
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def samples() -> dict[str, list]:
    """case id -> its CompletionOutputs, all cases sampled together."""
    llm = LLM(max_num_seqs=256)
    params = [SamplingParams(n=n, temperature=1.0, max_tokens=m, structured_outputs=s) for s, n, m in CASES.values()]
    outputs = llm.generate(["Here is the answer:"] * len(params), params)
    return {case: out.outputs for case, out in zip(CASES, outputs, strict=True)}


def _texts(samples: dict[str, list], case: str) -> list[str]:
    outputs = samples[case]
    assert len(outputs) == CASES[case][1]
    unfinished = [o.text for o in outputs if o.finish_reason != "stop"]
    assert not unfinished, unfinished
    return [o.text for o in outputs]


def _validate(schema: dict, text: str, formats: bool = True) -> object:
    value = json.loads(text)
    VALIDATOR(schema, format_checker=VALIDATOR.FORMAT_CHECKER if formats else None).validate(value)
    return value


def test_fifty_samples_of_a_record_schema_all_validate(samples):
    values = [_validate(RECORD, t) for t in _texts(samples, "record")]
    assert len({json.dumps(v) for v in values}) > 1  # temperature 1: the samples differ


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_suite(samples, name):
    for text in _texts(samples, f"schema:{name}"):
        _validate(SCHEMAS[name], text)


def test_const_fields_are_the_constants(samples):
    for text in _texts(samples, "schema:const"):
        value = json.loads(text)
        assert (value["version"], value["kind"]) == (2, "point") and type(value["version"]) is int


@pytest.mark.parametrize("fmt", sorted(FORMAT_ORACLES))
def test_string_formats(samples, fmt):
    for text in _texts(samples, f"format:{fmt}"):
        value = _validate({"type": "string"}, text)  # the format by the test's own oracle
        assert FORMAT_ORACLES[fmt](value), (fmt, value)


@pytest.mark.parametrize("regex", REGEXES)
def test_regexes(samples, regex):
    for text in _texts(samples, f"regex:{regex}"):
        assert re.fullmatch(regex, text), (regex, text)


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_choices(samples, name):
    texts = _texts(samples, f"choice:{name}")
    assert set(texts) <= set(CHOICES[name]), texts


@pytest.mark.parametrize("choice", CHOICES["special"])
def test_each_special_choice_comes_back_exactly(samples, choice):
    assert _texts(samples, f"one-choice:{choice}") == [choice]


@pytest.mark.parametrize("name", sorted(LARK))
def test_lark_grammars(samples, name):
    oracle = LARK[name][1]
    for text in _texts(samples, f"lark:{name}"):
        assert oracle(text), (name, text)
