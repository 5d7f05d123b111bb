"""The instruction-set levels the native kernels are built for, as data; which one this process uses.

- `avx512`: AVX-512 with bf16 and VNNI dot products (`-march=native`: today's build, tuned to this CPU);
- `avx2_vnni`: x86-64-v3 and AVX-VNNI (the VEX u8 x s8 dot product `vpdpbusd` of Alder Lake, Sapphire Rapids and
  Zen 5): the avx2 level's kernels with one instruction for each 4-byte dot product where avx2 takes two or four;
- `avx2`: x86-64-v3 (AVX2, FMA, F16C, BMI2): integer dot products with `maddubs` / `madd`, as llama.cpp's AVX2 path;
- `portable`: no `-march` at all: plain C++ the compiler vectorises for the baseline of its target (any CPU).

The level is the best one this CPU's flags allow (read from /proc/cpuinfo, the flags the kernel reports), unless
MISTRALPY_ISA names one; naming one the CPU lacks is an error (its code would die on an illegal instruction). The
level names the build (build_key) and its `-DMISTRALPY_LEVEL_*` macro, from which kernels/isa.h derives the macros
the C++ sources branch on. `auto_dtype` is what dtype="auto" computes in: bfloat16 where that measured faster, on
avx2 as on avx512 (bf16 storage, float32 math: the native decoder stack and fused element-wise kernels run; about
1.5x decode and 2x prefill over float32 with torch itself held to AVX2, docs/BENCHMARKS.md). AVX-VNNI is a level
of its own rather than a variant of avx2 chosen inside one build: a build's flags say which instructions it may hold,
so `MISTRALPY_ISA=avx2` runs (and the tests check) exactly what a Haswell-to-Zen 4 CPU runs, on any newer one.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import MistralpyError

ENV_VAR = "MISTRALPY_ISA"
_CPUINFO = Path("/proc/cpuinfo")


class IsaLevelError(MistralpyError):
    """MISTRALPY_ISA names an unknown level, or one this CPU cannot run."""


@dataclass(frozen=True)
class IsaLevel:
    name: str
    cflags: tuple[str, ...]  # the target flags and the level's macro (with the build's common flags: build_key)
    requires: frozenset[str]  # CPU flags (as /proc/cpuinfo spells them) the level's code may use
    machines: frozenset[str]  # platform.machine() values it exists on (empty: every machine)
    auto_dtype: str  # what dtype="auto" computes in on this level: the faster one there, by measurement

    def runs_on(self, machine: str, flags: frozenset[str]) -> bool:
        return (not self.machines or machine in self.machines) and self.requires <= flags


_X86 = frozenset({"x86_64", "AMD64"})
# x86-64-v3 as the kernel reports it (lzcnt is "abm", movbe and xsave complete the psABI's list)
_V3 = frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})
_V3_VNNI = _V3 | {"avx_vnni"}
_AVX512 = _V3 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_vnni"}

LEVELS: dict[str, IsaLevel] = {
    "avx512": IsaLevel("avx512", ("-march=native", "-DMISTRALPY_LEVEL_AVX512=1"), _AVX512, _X86, "bfloat16"),
    "avx2_vnni": IsaLevel(
        "avx2_vnni", ("-march=x86-64-v3", "-mavxvnni", "-DMISTRALPY_LEVEL_AVX2_VNNI=1"), _V3_VNNI, _X86, "bfloat16"
    ),
    "avx2": IsaLevel("avx2", ("-march=x86-64-v3", "-DMISTRALPY_LEVEL_AVX2=1"), _V3, _X86, "bfloat16"),
    "portable": IsaLevel("portable", ("-DMISTRALPY_LEVEL_PORTABLE=1",), frozenset(), frozenset(), "float32"),
}


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The first CPU's feature flags (x86 `flags`, Arm `Features`); empty without /proc/cpuinfo."""
    try:
        lines = (cpuinfo or _CPUINFO).read_text(errors="replace").splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        field, _, value = line.partition(":")
        if field.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def detected_level(machine: str | None = None, flags: frozenset[str] | None = None) -> IsaLevel:
    """The best level this CPU runs (LEVELS are in order, best first)."""
    machine = machine or platform.machine()
    flags = cpu_flags() if flags is None else flags
    return next(level for level in LEVELS.values() if level.runs_on(machine, flags))


def current_level() -> IsaLevel:
    """MISTRALPY_ISA's level if set (checked against this CPU), else the detected one."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if not forced or forced == "auto":
        return detected_level()
    if forced not in LEVELS:
        raise IsaLevelError(f"{ENV_VAR}={forced!r} is not a level; choose one of: auto, {', '.join(LEVELS)}")
    level, machine, flags = LEVELS[forced], platform.machine(), cpu_flags()
    if not level.runs_on(machine, flags):
        missing = sorted(level.requires - flags) if machine in level.machines or not level.machines else [machine]
        raise IsaLevelError(f"{ENV_VAR}={forced}: this CPU cannot run that level (it lacks {', '.join(missing)})")
    return level
