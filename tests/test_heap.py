"""heap.py's policies. StepTrim: the heap is trimmed once before the first narrow step after a wide (prefill) one,
never between steps of one kind; the CPU model runner applies it to every step it executes. one_arena: glibc's
M_ARENA_MAX set to 1 unless the user's MALLOC_ARENA_MAX says otherwise; `mistralpy serve` sets it first."""

from __future__ import annotations

import inspect
import subprocess
import sys

from mistralpy import LLM, SamplingParams
from mistralpy.heap import M_ARENA_MAX, WIDE_STEP_TOKENS, StepTrim, one_arena, trim_heap
from mistralpy.server import serve


def _trims(step_tokens: list[int], wide_tokens: int = WIDE_STEP_TOKENS) -> list[int]:
    calls = []
    policy = StepTrim(lambda: calls.append(len(calls)), wide_tokens)
    trimmed = [i for i, n in enumerate(step_tokens) if policy.before_step(n)]
    assert len(calls) == len(trimmed)  # the trim ran exactly where before_step said so
    return trimmed


def test_trims_once_when_wide_steps_give_way_to_narrow_ones():
    assert _trims([512, 512, 300, 32, 32, 32]) == [3]
    assert _trims([32, 512, 31, 512, 512, 1, 1]) == [2, 5]  # after each run of prefill chunks


def test_never_trims_between_steps_of_one_kind():
    assert _trims([32] * 10) == []  # decode only: no trim, whatever the number of steps
    assert _trims([512] * 10) == []  # a long prefill: its chunks reuse each other's freed memory
    assert _trims([WIDE_STEP_TOKENS - 1, 1, WIDE_STEP_TOKENS - 1]) == []  # narrow: below the width


def test_the_width_is_inclusive():
    assert _trims([WIDE_STEP_TOKENS, WIDE_STEP_TOKENS - 1]) == [1]
    assert _trims([8, 7, 9, 20, 3], wide_tokens=8) == [1, 4]


def test_the_cpu_runner_trims_before_the_first_decode_step_after_a_prefill(tiny_llama):
    llm = LLM(str(tiny_llama[1]), dtype="float32")
    runner = llm.engine.model_runner
    assert isinstance(runner.step_trim, StepTrim) and runner.step_trim.trim is trim_heap
    assert runner.step_trim.wide_tokens == WIDE_STEP_TOKENS
    calls = []
    runner.step_trim = StepTrim(lambda: calls.append(1), wide_tokens=8)
    greedy = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    llm.generate([list(range(100, 120))], greedy)  # a 20-token prefill step, then 4 one-token steps
    assert len(calls) == 1
    llm.generate([[5, 6, 7], [8, 9]], greedy)  # a 5-token prefill: narrow, as are its decode steps
    assert len(calls) == 1


def test_one_arena_sets_glibcs_arena_limit_to_one():
    calls = []
    assert one_arena({}, lambda param, value: calls.append((param, value)) or 1)
    assert calls == [(M_ARENA_MAX, 1)] and M_ARENA_MAX == -8  # malloc.h's M_ARENA_MAX


def test_one_arena_leaves_the_users_malloc_arena_max_alone():
    calls = []
    assert not one_arena({"MALLOC_ARENA_MAX": "4"}, lambda param, value: calls.append((param, value)) or 1)
    assert calls == []


def test_one_arena_calls_glibc():
    """In a process of its own: glibc's mallopt accepts the setting (returns 1)."""
    code = "from mistralpy.heap import one_arena; print(one_arena({}))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "True\n"


def test_serve_sets_one_arena_before_building_the_server():
    source = inspect.getsource(serve.serve_command)
    assert "one_arena()" in source and source.index("one_arena()") < source.index("server_app(")
