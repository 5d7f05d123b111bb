"""heap.py's policies. StepTrim: the heap is trimmed once before the first narrow step after a wide (prefill) one,
never between steps of one kind; the CPU model runner applies it to every step it executes. one_arena: glibc's
M_ARENA_MAX set to 1 unless the user's MALLOC_ARENA_MAX says otherwise; `mistralpy serve` sets it first.
fixed_mmap_threshold: large transients get pages of their own, given back when freed, as the resident set shows."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.heap import (
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    MMAP_THRESHOLD_BYTES,
    WIDE_STEP_TOKENS,
    StepTrim,
    fixed_mmap_threshold,
    one_arena,
    trim_heap,
)
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


def test_serve_sets_one_arena_and_the_threshold_before_building_the_server():
    source = inspect.getsource(serve.serve_command)
    for call in ("one_arena()", "fixed_mmap_threshold()"):
        assert call in source and source.index(call) < source.index("server_app(")


def test_fixed_mmap_threshold_sets_glibcs_threshold_unless_the_user_did():
    calls = []
    assert fixed_mmap_threshold({}, lambda param, value: calls.append((param, value)) or 1)
    assert calls == [(M_MMAP_THRESHOLD, 4 << 20)] and M_MMAP_THRESHOLD == -3  # malloc.h's M_MMAP_THRESHOLD
    assert not fixed_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"}, lambda *a: calls.append(a) or 1)
    assert len(calls) == 1


# Two 6 MB blocks, each written and freed in turn; prints the resident growth (kB) the second one left behind.
_TWO_TRANSIENTS = """
import ctypes, ctypes.util, sys
from mistralpy.heap import fixed_mmap_threshold
if sys.argv[1] == "fixed":
    assert fixed_mmap_threshold({})
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_kb():
    return int(open("/proc/self/statm").read().split()[1]) * 4
size = 6 << 20
first = libc.malloc(size); ctypes.memset(first, 1, size); libc.free(first)
before = rss_kb()
second = libc.malloc(size); ctypes.memset(second, 1, size); libc.free(second)
print(rss_kb() - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc and /proc/self/statm")
def test_a_freed_large_transient_leaves_the_resident_set_with_the_fixed_threshold():
    """glibc's own threshold rises to a freed mmapped block's size, so the second 6 MB block comes from the heap and
    stays resident after it is freed; with the fixed threshold both are unmapped."""
    assert MMAP_THRESHOLD_BYTES < 6 << 20

    def kept_kb(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _TWO_TRANSIENTS, mode], capture_output=True, text=True, check=True)
        return int(run.stdout.split()[-1])

    assert kept_kb("glibc") > 5000  # the premise: without the setting the block stays (6144 kB written)
    assert kept_kb("fixed") < 1000
