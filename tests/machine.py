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


def cpuinfo(*names: str) -> str:
    """The first CPU's value of the first of `names` in /proc/cpuinfo, "" where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in names:
            return value.strip()
    return ""


def cpu_model() -> str:
    """Vendor, family, model, stepping and microcode, as a failure message names the CPU."""
    return " ".join(cpuinfo(k) or "?" for k in ("vendor_id", "cpu family", "model", "stepping", "microcode"))


def _cpu_flags() -> frozenset[str]:
    return frozenset(cpuinfo("flags", "Features").split())


def _ninja() -> str | None:
    found = shutil.which("ninja")
    if found is None:  # the `ninja` package puts it next to this Python, which need not be on PATH
        beside = Path(sysconfig.get_path("scripts")) / "ninja"
        found = str(beside) if beside.is_file() else None
    return found


CPU_FLAGS = _cpu_flags()
CPU_VENDOR = cpuinfo("vendor_id")  # GenuineIntel, AuthenticAMD, ...; "" off x86 Linux
ARCH = platform.machine()
COMPILER = shutil.which(os.environ.get("CXX", "c++"))
NINJA = _ninja()
NATIVE_REQUESTED = os.environ.get("MISTRALPY_NATIVE", "1") != "0"

# The machine can build the native kernels: a failed build is then a failure of the suite, never a skip.
CAN_BUILD_NATIVE = NATIVE_REQUESTED and os.name == "posix" and COMPILER is not None and NINJA is not None
# The ISA level the native kernels are built for (mistralpy/kernels/isa_level.py): MISTRALPY_ISA where the run forces
# one, else the best this CPU's flags allow. kernels/isa.h turns the level's flags into the fast kernels.
_AVX512_FLAGS = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"}
_V3_FLAGS = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_FORCED = os.environ.get("MISTRALPY_ISA", "").strip().lower()
if _FORCED in ("", "auto"):
    _FORCED = ""
CPU_AVX512 = ARCH == "x86_64" and _AVX512_FLAGS | _V3_FLAGS <= CPU_FLAGS
CPU_AVX2 = ARCH == "x86_64" and _V3_FLAGS <= CPU_FLAGS
CPU_AVX2_VNNI = CPU_AVX2 and "avx_vnni" in CPU_FLAGS
CPU_AMX = CPU_AVX512 and {"amx_tile", "amx_int8"} <= CPU_FLAGS
_BEST = "avx512" if CPU_AVX512 else "avx2_vnni" if CPU_AVX2_VNNI else "avx2" if CPU_AVX2 else "portable"
ISA_LEVEL = _FORCED or _BEST
# The levels this CPU runs, best first (a build for each below ISA_LEVEL is tested: test_isa_level_builds.py)
CPU_LEVELS = [
    name
    for name, runs in (("avx512", CPU_AVX512), ("avx2_vnni", CPU_AVX2_VNNI), ("avx2", CPU_AVX2), ("portable", True))
    if runs
]
# The build's AVX-512 kernels: on the avx512 level only (a forced lower level compiles without them).
AVX512F = ISA_LEVEL == "avx512"
AVX512_BF16 = AVX512F
AVX512_VNNI = AVX512F
# ... and on a CPU with AMX, its quantized matmul takes batches of 16+ rows in int8 tiles (the kernel grants them)
AMX = AVX512F and CPU_AMX
# Every level has the native quantized matmul (and the DecoderStack on it); the machine must run it if it can build.
NATIVE_QMATMUL = CAN_BUILD_NATIVE


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
