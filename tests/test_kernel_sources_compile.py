"""Every native kernel source compiles for CPUs other than this one: x86-64 without AVX-512 (the avx2 level,
x86-64-v3: AVX2 and FMA) and aarch64 (the portable level; where an aarch64 cross compiler is installed: Debian's
g++-aarch64-linux-gnu). The kernels that need AVX-512 are then left out by their #if guards (kernels/isa.h).

x86-64-v3 is compiled to an object (-O0): an AVX-512 intrinsic outside its guard passes a syntax check and fails
only there ("inlining failed ... target specific option mismatch"). aarch64 needs a syntax check only: an x86
intrinsic or header there is an undeclared name. Slow: torch's headers cost ~30 s of CPU a file and target
(~400 s for the 14, measured on this project's 2-core machine)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sysconfig
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from mistralpy.kernels.build_key import source_files

SOURCES = [p.name for p in source_files((".cpp",))]
TARGETS = {
    # target: (compilers to try, flags)
    "x86-64-v3": (
        ["x86_64-linux-gnu-g++"] + (["c++"] if platform.machine() == "x86_64" else []),
        ["-march=x86-64-v3", "-DMISTRALPY_LEVEL_AVX2=1", "-O0", "-c", "-o", os.devnull],
    ),
    "aarch64": (
        ["aarch64-linux-gnu-g++"] + (["c++"] if platform.machine() == "aarch64" else []),
        ["-march=armv8-a", "-DMISTRALPY_LEVEL_PORTABLE=1", "-fsyntax-only"],
    ),
}
_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
_jobs: dict[tuple[str, str], Future] = {}


def _compiler(target: str) -> str | None:
    return next((found for name in TARGETS[target][0] if (found := shutil.which(name))), None)


def _command(compiler: str, target: str, source: str) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    includes = [*include_paths("cpu"), sysconfig.get_path("include")]
    defines = ["-DTORCH_EXTENSION_NAME=mistralpy_native_check", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    isystem = [arg for path in includes for arg in ("-isystem", path)]
    flags = ["-std=c++20", "-fPIC", "-fopenmp", "-w", *TARGETS[target][1]]  # torch's loader's flags, -w: its warnings
    return [compiler, *defines, *isystem, *flags, str(source_files((".cpp",))[0].parent / source)]


def _compile(target: str, source: str) -> subprocess.CompletedProcess:
    """All of a target's sources are compiled at once (on all cores) when its first test asks for one."""
    compiler = _compiler(target)
    if (target, source) not in _jobs:
        # The pool's threads spawn while the tests go on, and pytest sets and removes PYTEST_CURRENT_TEST between
        # tests. Without env, the vfork()ed child reads the live C environment, which that setenv() can move: a CI
        # run once failed here with EFAULT ("Bad address") from the exec. With a copy, the child's own one is used.
        env = dict(os.environ)
        for name in SOURCES:
            command = _command(compiler, target, name)
            _jobs[target, name] = _pool.submit(
                subprocess.run, command, capture_output=True, text=True, timeout=900, env=env
            )
    return _jobs[target, source].result()


@pytest.mark.slow
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("source", SOURCES)
def test_source_compiles_without_avx512(target: str, source: str) -> None:
    if _compiler(target) is None:
        package = "g++-aarch64-linux-gnu" if target == "aarch64" else "g++-x86-64-linux-gnu"
        pytest.skip(f"no compiler for {target} here (Debian: apt-get install {package})")
    result = _compile(target, source)
    assert result.returncode == 0, f"{source} does not compile for {target}:\n{result.stderr[-6000:]}"
