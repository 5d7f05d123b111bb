"""The build's cache key: everything the compiled library depends on, hashed into its name.

The build is for one ISA level (isa_level: `avx512` compiles with `-march=native`, for the CPU it runs on), so the
level and the CPU's features are part of the key: a cache shared by hosts with different CPUs (an NFS home, a baked
container layer) holds one build for each, a host never finds a build made for another (whose instructions it may
lack: SIGILL), and each level forced with MISTRALPY_ISA has a build directory of its own. The sources are hashed by
content, so an edit or a `git checkout` names a new build; the compiler, torch and Python's ABI complete the key.
Computing it imports nothing heavy (no torch): a process that only loads a finished build pays a file read, one hash
and one `c++ --version`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from . import isa_level

SOURCE_DIR = Path(__file__).parent
# OpenMP: at::parallel_for runs its loop on torch's threads (without it, serially), and `omp simd` vectorises the dots;
# the level adds its target flags (isa_level)
CFLAGS = ("-O3", "-fopenmp")
LDFLAGS = ("-fopenmp",)


@dataclass(frozen=True)
class BuildKey:
    sources: str  # sha256 of every C++ source and header, names and contents
    isa: str  # the ISA level (isa_level.LEVELS)
    cpu: str  # the machine and its CPU's feature flags: what -march=native compiles for
    compiler: str  # the C++ compiler torch's loader runs ($CXX or c++) and its version
    torch: str
    python: str  # the extension ABI
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]

    @property
    def name(self) -> str:
        """The library's module name and its directory's: `mistralpy_native_` + 16 hex digits of the key."""
        return "mistralpy_native_" + hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)


def source_files(suffixes: tuple[str, ...] = (".cpp", ".h")) -> list[Path]:
    return sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in suffixes)


def sources_digest() -> str:
    h = hashlib.sha256()
    for path in source_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cpu_features() -> str:
    """`<machine>: <sorted feature flags>` from the kernel's view of the first CPU (x86 `flags`, Arm `Features`);
    without /proc/cpuinfo, the machine and processor names only."""
    flags = isa_level.cpu_flags()
    if flags:
        return f"{platform.machine()}: {' '.join(sorted(flags))}"
    return f"{platform.machine()}: {platform.processor()}"


def compiler_version() -> str:
    """`<$CXX or c++>: <first line of its --version>`, or `...: not found` (a key of its own: installing a compiler
    names a new build, so an earlier failure for want of one is not held against it)."""
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        return f"{cxx}: not found"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"{cxx}: unusable ({type(e).__name__})"
    first = out.splitlines()[0] if out.strip() else "no version"
    return f"{cxx} ({os.path.realpath(path)}): {first}"


def torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:  # a torch built in place, without package metadata
        import torch

        return f"{torch.__version__} {torch.version.git_version}"


def current_key() -> BuildKey:
    """The key of this process's build: of its ISA level (isa_level.current_level; IsaLevelError if MISTRALPY_ISA
    names one this CPU lacks)."""
    level = isa_level.current_level()
    python = sysconfig.get_config_var("SOABI") or sys.implementation.cache_tag
    cflags = CFLAGS + level.cflags
    return BuildKey(
        sources_digest(), level.name, cpu_features(), compiler_version(), torch_version(), python, cflags, LDFLAGS
    )
