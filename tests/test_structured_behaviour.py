"""Structured output inside the engine, on the embedded model: stop strings, prefix caching, preemption, constrained
and free requests in one batch, the budget ending a JSON early, and an aborted request's state freed. The oracles are
the same requests run alone (greedy, or seeded: a request's tokens do not depend on its batch) and jsonschema."""

from __future__ import annotations

import gc
import json
import weakref

import jsonschema
import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.structured import StructuredOutputsParams

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "population": {"type": "integer", "minimum": 0, "maximum": 99999},
        "capital": {"type": "boolean"},
    },
    "required": ["city", "population", "capital"],
    "additionalProperties": False,
}
SPEC = StructuredOutputsParams(json=SCHEMA)
PROMPTS = [f"City record number {i} as JSON:" for i in range(6)]


@pytest.fixture(scope="module")
def llm():
    return LLM()


@pytest.fixture(scope="module")
def greedy_alone(llm) -> dict[str, str]:
    """Each prompt's greedy constrained text, run alone (computed once, used by several tests)."""
    return {p: llm.generate([p], _greedy())[0].outputs[0].text for p in PROMPTS[:3]}


def _greedy(**kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=80, structured_outputs=SPEC, **kw)  # JSON ends in ~30 tokens


def _valid(text: str) -> dict:
    value = json.loads(text)
    jsonschema.validate(value, SCHEMA)
    return value


def test_a_stop_string_cuts_a_constrained_output_as_usual(llm, greedy_alone):
    """The stop string ends the request and is cut from its text, as for free text: the text before the stop comes
    back (no longer a whole JSON value: the caller asked for the cut), with finish_reason "stop" and the stop string
    as stop_reason. The output up to the stop is the unstopped output's, the grammar's state being the same."""
    full = greedy_alone[PROMPTS[0]]
    _valid(full)
    stop = '"population"'
    cut = llm.generate(PROMPTS[:1], _greedy(stop=[stop]))[0].outputs[0]
    assert (cut.text, cut.finish_reason, cut.stop_reason) == (full[: full.index(stop)], "stop", stop)
    kept = llm.generate(PROMPTS[:1], _greedy(stop=[stop], include_stop_str_in_output=True))[0].outputs[0]
    assert kept.text == full[: full.index(stop) + len(stop)] and kept.finish_reason == "stop"


def test_prefix_cache_hit_keeps_the_output(llm):
    prompt = "A long shared preamble that fills more than one block of the cache. " * 3 + "The record:"
    stats = llm.engine.block_manager.stats
    first = llm.generate([prompt], _greedy())[0]
    hits_before = stats.hits
    second = llm.generate([prompt], _greedy())[0]
    assert second.num_cached_tokens > 0 and stats.hits > hits_before
    assert second.outputs[0].text == first.outputs[0].text
    _valid(second.outputs[0].text)


def test_preemption_keeps_constrained_outputs_valid_and_equal_to_alone(llm, greedy_alone):
    seeded = [SamplingParams(temperature=1.0, seed=i, max_tokens=80, structured_outputs=SPEC) for i in range(3)]
    params = [_greedy()] * 3 + seeded
    alone = list(greedy_alone.values()) + [
        llm.generate([p], sp)[0].outputs[0].text for p, sp in zip(PROMPTS[3:], seeded, strict=True)
    ]
    # 8 blocks of 16 tokens: one request fits, six at once must take turns
    small = LLM(num_kv_blocks=8, block_size=16, max_model_len=128)
    together = [o.outputs[0] for o in small.generate(PROMPTS, params)]
    assert small.engine.scheduler.stats.num_preemptions > 0
    assert [o.text for o in together] == alone
    for out in together:
        assert out.finish_reason == "stop"
        _valid(out.text)


def test_constrained_and_free_requests_in_one_batch(llm, greedy_alone):
    free = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    free_alone = [llm.generate([p], free)[0].outputs[0].token_ids for p in PROMPTS[3:]]
    outs = llm.generate(PROMPTS, [_greedy()] * 3 + [free] * 3)
    assert [o.outputs[0].text for o in outs[:3]] == list(greedy_alone.values())
    assert [o.outputs[0].token_ids for o in outs[3:]] == free_alone  # the masks touch only their own rows
    for o in outs[:3]:
        _valid(o.outputs[0].text)


def test_the_budget_ends_a_json_early_with_length(llm, greedy_alone):
    full = greedy_alone[PROMPTS[0]]
    short = llm.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=5, structured_outputs=SPEC))[0]
    short = short.outputs[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 5
    assert full.startswith(short.text) and len(short.text) < len(full)
    with pytest.raises(json.JSONDecodeError):
        json.loads(short.text)


def test_an_aborted_constrained_request_frees_its_state(llm):
    engine = llm.engine
    free_blocks = engine.block_manager.num_free_blocks
    request_id = engine.add_request(
        PROMPTS[0], SamplingParams(n=2, temperature=1.0, max_tokens=80, structured_outputs=SPEC)
    )
    matchers = [weakref.ref(r.matcher) for r in engine.scheduler.requests.values()]
    assert len(matchers) == 2 and all(m() is not None for m in matchers)
    for _ in range(3):
        engine.step()
    engine.abort_request(request_id)
    assert not engine.has_unfinished_requests() and request_id not in engine.output_processor.parents
    gc.collect()
    assert [m() for m in matchers] == [None, None]  # no one holds the matchers (llguidance's state) any more
    assert engine.block_manager.num_free_blocks == free_blocks
    _valid(llm.generate(PROMPTS[:1], _greedy())[0].outputs[0].text)  # and the same spec serves the next request


@pytest.mark.parametrize("spec", [{"regex": "[a&&b]"}, {"regex": "ab[a&&b]"}, {"grammar": "start: A\nA: /[a&&b]/"}])
def test_a_grammar_no_output_matches_is_an_invalid_request(llm, spec):
    """llguidance compiles these, but no output matches them: unchecked, the request ended at once with "stop" and
    an empty text that does not match either."""
    with pytest.raises(InvalidRequestError, match="no output matches it"):
        llm.generate(["x"], SamplingParams(max_tokens=8, structured_outputs=spec))
    assert not llm.engine.has_unfinished_requests()
    assert (
        llm.generate(["x"], SamplingParams(max_tokens=4, structured_outputs={"regex": "[a-z]{4}"}))[0].outputs[0].text
    )
