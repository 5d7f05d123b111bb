"""A step's structured-output masks computed on a background thread while the forward runs (the default) give exactly
the outputs of masks computed inline before the draw: greedy and seeded sampling, n > 1, constrained and free requests
in one batch, preemption, a request aborted between steps. Each constrained output also matches its spec (jsonschema,
re.fullmatch), checked here independently of llguidance."""

from __future__ import annotations

import json
import re
import threading

import jsonschema
import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.structured import StructuredOutputsParams, step_masks

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 999},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "name": {"type": "string", "maxLength": 6},
    },
    "required": ["id", "tags", "name"],
    "additionalProperties": False,
}
REGEX = r"[a-z]{1,4}(-[0-9]{1,2}){1,3}"
JSON = StructuredOutputsParams(json=SCHEMA)


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return LLM(str(tiny_llama[1]), dtype="float32", block_size=4)


def mixed_batch() -> tuple[list[str], list[SamplingParams]]:
    regex = StructuredOutputsParams(regex=REGEX)
    params = [
        SamplingParams(temperature=0, max_tokens=60, structured_outputs=JSON),
        SamplingParams(temperature=1.0, seed=3, n=3, max_tokens=60, structured_outputs=JSON),
        SamplingParams(temperature=0.8, top_p=0.9, seed=5, max_tokens=20, structured_outputs=regex),
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
        SamplingParams(temperature=1.0, seed=9, max_tokens=12, ignore_eos=True),
        SamplingParams(temperature=0, max_tokens=20, structured_outputs=regex),
    ]
    return [f"prompt number {i}:" for i in range(len(params))], params


def generate(llm: LLM, overlap: bool, prompts: list[str], params: list[SamplingParams]) -> list[list[tuple]]:
    llm.engine.model_runner.overlap_masks = overlap
    try:
        outs = llm.generate(prompts, params)
    finally:
        llm.engine.model_runner.overlap_masks = True
    return [[(o.token_ids, o.text, o.finish_reason) for o in r.outputs] for r in outs]


def check_specs(results: list[list[tuple]], params: list[SamplingParams]) -> None:
    for outputs, p in zip(results, params, strict=True):
        spec = p.structured_outputs
        for _, text, reason in outputs:
            if spec is None or reason != "stop":
                continue
            if spec.json is not None:
                jsonschema.validate(json.loads(text), SCHEMA)
            else:
                assert re.fullmatch(REGEX, text), text


def test_overlapped_masks_equal_inline_masks(tiny, monkeypatch):
    threads = []
    compute = step_masks.compute_step_masks

    def recording(*args):
        threads.append(threading.current_thread() is threading.main_thread())
        return compute(*args)

    monkeypatch.setattr(step_masks, "compute_step_masks", recording)
    prompts, params = mixed_batch()
    overlapped = generate(tiny, True, prompts, params)
    assert threads and not any(threads)  # every step's masks came from the background thread
    threads.clear()
    inline = generate(tiny, False, prompts, params)
    assert threads and all(threads)
    assert overlapped == inline
    check_specs(overlapped, params)
    assert sum(reason == "stop" for _, _, reason in overlapped[1]) >= 1  # some JSON finished: the check checked


def test_overlap_under_preemption(tiny_llama):
    params = [SamplingParams(temperature=1.0, seed=i, max_tokens=80, structured_outputs=JSON) for i in range(6)]
    params += [SamplingParams(temperature=0, n=2, max_tokens=80, structured_outputs=JSON)]
    prompts = [f"record {i}:" for i in range(len(params))]
    small = LLM(str(tiny_llama[1]), dtype="float32", block_size=4, num_kv_blocks=40, max_model_len=120)
    overlapped = generate(small, True, prompts, params)
    preempted = small.engine.scheduler.stats.num_preemptions
    assert preempted > 0
    inline = generate(small, False, prompts, params)
    assert small.engine.scheduler.stats.num_preemptions > preempted
    assert overlapped == inline
    check_specs(overlapped, params)


def test_abort_between_overlapped_steps(tiny):
    def run(overlap: bool) -> dict[str, list[int]]:
        engine = tiny.engine
        engine.model_runner.overlap_masks = overlap
        ids = [engine.add_request(f"row {i}:", SamplingParams(temperature=1.0, seed=i, max_tokens=40,
                                                              structured_outputs=JSON)) for i in range(3)]  # fmt: skip
        last = {}
        for step in range(200):
            if not engine.has_unfinished_requests():
                break
            if step == 4:
                engine.abort_request(ids[1])
            for out in engine.step():
                last[out.request_id] = out.outputs[0].token_ids
        engine.model_runner.overlap_masks = True
        return {rid: last[rid] for rid in (ids[0], ids[2])}

    overlapped, inline = run(True), run(False)
    assert list(overlapped.values()) == list(inline.values())
    assert all(len(tokens) > 4 for tokens in overlapped.values())
