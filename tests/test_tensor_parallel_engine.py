"""The engine with tensor_parallel_size=2 (a spawned worker, gloo): greedy output on the embedded model identical to
one process's, a batch included; a worker that dies ends the next step with a clear error, not a hang.

The embedded model runs with its float reference weights (weights="dequantized"): on the native quantized kernel,
which rounds activations to int8, a relative change of 1e-7 in the first layer's input (the order of an all-reduce's
sum) moved its logits by up to 1.06 (measured), so no split of the sums could promise TP=1's greedy tokens there."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.distributed.tensor_parallel.group import TensorParallelError
from mistralpy.errors import InvalidRequestError

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a", "1, 2, 3, 4,"]
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
OPTIONS = dict(dtype="float32", weights="dequantized", num_threads=1, max_model_len=256, kv_cache_tokens=1024)


def _tokens(llm: LLM, prompts: list[str]) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, GREEDY)]


@pytest.fixture(scope="module")
def single():
    return LLM(**OPTIONS)


@pytest.fixture
def parallel():
    llm = LLM(tensor_parallel_size=2, **OPTIONS)
    yield llm
    llm.engine.tp.close()


def test_greedy_identical_to_one_process(single, parallel):
    expected = _tokens(single, PROMPTS)
    assert [_tokens(parallel, [p])[0] for p in PROMPTS[:2]] == expected[:2]  # alone
    assert _tokens(parallel, PROMPTS) == expected  # in one batch


def test_dead_worker_ends_the_engine_with_an_error(parallel):
    assert len(_tokens(parallel, PROMPTS[:1])[0]) == GREEDY.max_tokens
    worker = parallel.engine.tp.workers[0]
    terms = []  # a library caller's own SIGTERM handler (pytest's, Ray's...) is not a server: never signalled
    previous = signal.signal(signal.SIGTERM, lambda *_: terms.append(1))
    try:
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(timeout=30)
        with pytest.raises(TensorParallelError, match="worker rank 1 .* exited with code -9"):
            parallel.generate(PROMPTS[:1], GREEDY)
        time.sleep(1)  # the watcher has seen the death by now (it logs it)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert terms == []


def test_single_process_options_refused():
    with pytest.raises(InvalidRequestError, match="does not support enable_lora"):
        LLM(tensor_parallel_size=2, enable_lora=True, **OPTIONS)
    with pytest.raises(InvalidRequestError, match="tensor_parallel_size must be a positive integer"):
        LLM(tensor_parallel_size=0, **OPTIONS)
