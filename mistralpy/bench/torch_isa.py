"""torch held to the benchmarked ISA level: `mistralpy bench --isa avx2` times torch's own kernels (the sampler, the
embedding lookups, a transformers peer) as they run on an AVX2 CPU, not with this CPU's AVX-512, which a machine of
that level lacks. torch's float32 matmuls go to MKL, its bf16 ones to oneDNN and the rest to ATen's own kernels; each
reads its variable (MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) once, when it loads, so the
command re-executes itself with them set (docs/BENCHMARKS.md's avx2 figures are such runs)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# the ISA levels below this CPU's, as torch spells them; avx512 and auto leave torch to pick its best
TORCH_ISA: dict[str, dict[str, str]] = {
    "avx2_vnni": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2_VNNI",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2_E1",
    },
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def missing_env(level: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables `environ` lacks (or sets otherwise) for torch to run at `level`."""
    wanted = TORCH_ISA.get(level or "", {})
    return {name: value for name, value in wanted.items() if environ.get(name) != value}


def hold_torch_to(level: str | None) -> None:
    """Re-execute this very command with torch held to `level` (no return), unless it already is."""
    env = missing_env(level, os.environ)
    if env:
        sys.stdout.flush()
        os.execve(sys.executable, list(sys.orig_argv), {**os.environ, **env})
