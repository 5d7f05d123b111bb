"""This machine, as the tests state it: its CPU's flags read here from /proc/cpuinfo, its tools found here on PATH.

Which native kernels must run follows from this statement alone, never from the probes the code under test uses
(`has_qmatmul()`, `native_qmatmul()`): a test expects the fast path where this file says the machine has it, so a
build that silently lost a kernel fails the test instead of turning it into a fallback or a skip.
"""

from __future__ import annotations

import os
import platform
import shutil
import sysconfig
from pathlib import Path

import pytest


def _cpu_flags() -> frozenset[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _ninja() -> str | None:
    found = shutil.which("ninja")
    if found is None:  # the `ninja` package puts it next to this Python, which need not be on PATH
        beside = Path(sysconfig.get_path("scripts")) / "ninja"
        found = str(beside) if beside.is_file() else None
    return found


CPU_FLAGS = _cpu_flags()
ARCH = platform.machine()
COMPILER = shutil.which(os.environ.get("CXX", "c++"))
NINJA = _ninja()
NATIVE_REQUESTED = os.environ.get("MISTRALPY_NATIVE", "1") != "0"

# The machine can build the native kernels: a failed build is then a failure of the suite, never a skip.
CAN_BUILD_NATIVE = NATIVE_REQUESTED and os.name == "posix" and COMPILER is not None and NINJA is not None
# -march=native gives the compiler these flags; kernels/isa.h turns them into the fast kernels.
AVX512F = ARCH == "x86_64" and "avx512f" in CPU_FLAGS
AVX512_BF16 = ARCH == "x86_64" and {"avx512f", "avx512bw", "avx512_bf16"} <= CPU_FLAGS
AVX512_VNNI = AVX512_BF16 and "avx512_vnni" in CPU_FLAGS
# This machine must run the native quantized matmul (and the DecoderStack on it); attention kernels run everywhere.
NATIVE_QMATMUL = CAN_BUILD_NATIVE and AVX512_VNNI


def why_no_native() -> str:
    if not NATIVE_REQUESTED:
        return "the native kernels are turned off (MISTRALPY_NATIVE=0)"
    if os.name != "posix":
        return "the native kernels are built on POSIX systems only"
    missing = [name for name, found in (("a C++ compiler", COMPILER), ("ninja", NINJA)) if found is None]
    return f"this machine cannot build the native kernels: no {' and no '.join(missing)}"


def require_native() -> None:
    if not CAN_BUILD_NATIVE:
        pytest.skip(why_no_native())


def require_native_qmatmul() -> None:
    """Skip unless this machine must run the native quantized matmul (tests then assert that it does)."""
    require_native()
    if not NATIVE_QMATMUL:
        pytest.skip(f"this CPU ({ARCH}) lacks AVX-512 BF16 and VNNI: no native quantized matmul here")
