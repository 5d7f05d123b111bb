"""The lower ISA levels built and tested on this machine: each level below the one this CPU runs (their flags are a
subset of its) is built once (`python -m mistralpy.kernels` with MISTRALPY_ISA, into this run's build cache, where
a later run finds it) and the native kernel tests run again in a pytest of their own, forced to that level: the
quantized matmul equals its exact torch spelling (qmatmul_reference) bit for bit, the attention and element-wise
kernels and the decoder stack equal their torch references, and the embedded model decodes greedily as the kernel
reference does, token for token. The builds are shared: one build cache for the session (and later runs), each
level built once, whichever test asks first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import machine

ROOT = Path(__file__).resolve().parents[1]
# per level: the quantized matmul, the loaded build's key, and the embedded model's greedy agreement in the level's
# auto dtype (bf16 on avx2, whose decode steps run the decoder stack; float32 on portable), short: 8 prompts x 16
# tokens (the full 38 x 32 runs on this machine's own level)
COMMON_TESTS = [
    "tests/test_native_quant_matmul.py",
    "tests/test_kernel_loading.py::test_the_session_loaded_the_keyed_build",
    "tests/test_embedded_model.py::test_short_greedy_equals_the_kernel_reference",
]
# the attention and element-wise kernels below avx512: AVX2 vectors on the avx2 levels (attention_scores.h,
# attention_rows.h, elementwise.cpp, argmax.cpp), plain C++ on portable; the same bits as the avx512 level's
BELOW_AVX512_TESTS = [
    "tests/test_native_ops.py",
    "tests/test_native_argmax.py",
    "tests/test_native_attention.py",
    "tests/test_native_prefill_attention.py",
    "tests/test_decoder_stack.py",
]
# int8 attention (the cache's default with quantized weights) against float64, decode and prefill (attention_scores.h)
INT8_ATTENTION_TESTS = ["tests/test_kv_cache_int8.py::test_kernels_on_an_int8_cache"]
# avx2_vnni differs from avx2 in the quantized matmul's integer dot products only (qmatmul_avx2.h)
KERNEL_TESTS = {
    "avx2_vnni": COMMON_TESTS,
    "avx2": COMMON_TESTS + BELOW_AVX512_TESTS + INT8_ATTENTION_TESTS,
    "portable": COMMON_TESTS + BELOW_AVX512_TESTS + INT8_ATTENTION_TESTS,
}


def _run(level: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, MISTRALPY_ISA=level)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _levels() -> list[str]:
    """The levels below this run's that this CPU runs."""
    levels = machine.CPU_LEVELS
    below = levels[levels.index(machine.ISA_LEVEL) + 1 :] if machine.ISA_LEVEL in levels else []
    return below if machine.CAN_BUILD_NATIVE else []


@pytest.mark.slow
@pytest.mark.parametrize("level", ["avx2_vnni", "avx2", "portable"])
def test_a_lower_level_builds_and_passes_the_kernel_tests(native_kernels, level: str) -> None:
    if level not in _levels():
        pytest.skip(f"this run's level is {machine.ISA_LEVEL}: {level} is not below it, or nothing builds here")
    built = _run(level, "-m", "mistralpy.kernels", timeout=1800)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "mistralpy_native_" in built.stdout
    tests = _run(level, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *KERNEL_TESTS[level], timeout=1800)
    out = tests.stdout + tests.stderr
    assert tests.returncode == 0, out[-8000:]
    assert " passed" in out and " failed" not in out and " error" not in out, out[-3000:]
