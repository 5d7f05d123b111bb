"""Native CPU kernels: C++ sources here, compiled with torch's extension loader (needs a C++ compiler and ninja).

Kernels: decode and prefill attention over the paged KV cache, matmuls against group-quantized weight codes, fused bf16
RMSNorm / SiLU-and-mul / rotary, and the Llama decoder layers of a decode step composed from them (DecoderStack).

ISA levels (isa_level): the kernels are built for `avx512`, `avx2` or `portable`, detected from the CPU's flags or
forced with MISTRALPY_ISA; every level has every kernel (the lower ones as AVX2 or plain C++ code).

Life cycle: a build is named by its key (build_key: the level, the sources' content, the CPU's features, the compiler,
torch)
and lives in its own directory (build_dir). An engine uses the kernels if their build is there (loading takes
milliseconds, library); else it starts the builder process detached (builder), for the engines that come after,
and runs the torch paths: no serving process compiles (~80 s). One builder per key (builder_lock); a build that
fails is recorded with its compiler output in a log, a warning names the log once per process, and nothing builds
that key again until `python -m mistralpy.kernels --rebuild`. MISTRALPY_NATIVE=0 turns the kernels off.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from types import ModuleType

from ..errors import MistralpyError
from . import builder, isa_level
from .build_dir import RETRY_HINT, BuildDir
from .build_key import BuildKey, current_key
from .builder_lock import build_running
from .library import load_library, missing_kernels

logger = logging.getLogger(__name__)


class KernelBuildError(MistralpyError):
    """The native kernels could not be built or loaded; the message names the build log."""


@dataclass
class _Process:
    """What this process knows of the kernels; read and changed under _lock."""

    module: ModuleType | None = None
    located: tuple[BuildDir, BuildKey] | None = None
    spawned: bool = False
    said: set[str] = field(default_factory=set)  # the once-a-process warnings given


_lock = threading.Lock()
_process = _Process()


def enabled() -> bool:
    """On unless MISTRALPY_NATIVE=0; POSIX only (the build's flags are GCC's and Clang's)."""
    return os.environ.get("MISTRALPY_NATIVE", "1") != "0" and os.name == "posix"


def loaded() -> ModuleType | None:
    """The kernels if this process has loaded them (an engine loads them when it starts, if they are built)."""
    return _process.module


def isa_report() -> dict[str, object]:
    """This process's ISA level, whether its native kernels run and whether their quantized matmul uses AMX tiles (for
    `mistralpy bench` and the server's /version): {"isa": "avx2", "native_kernels": True, "amx_tiles": False}; "isa"
    is the level the kernels are (or would be) built for."""
    try:
        level = isa_level.current_level().name
    except isa_level.IsaLevelError as e:
        level = f"invalid ({e})"
    module = _process.module
    return {
        "isa": module.isa_level() if module is not None else level,
        "native_kernels": module is not None,
        "amx_tiles": module is not None and module.amx_tiles(),
    }


def build_dir() -> BuildDir:
    """Where this process's build of the kernels lives (or will)."""
    with _lock:
        return _locate()[0]


def native_module() -> ModuleType | None:
    """The kernels if they are built (loading them takes milliseconds); else None, and a build is started in a
    detached process unless one is at work or this key failed to build before (then a warning, once)."""
    if not enabled():
        return None
    with _lock:
        if _process.module is None:
            _process.module = _find_or_start_build()
        return _process.module


def build(rebuild: bool = False, timeout_s: float | None = None) -> ModuleType:
    """Build the kernels now unless built (in the builder process, waited for) and load them. A recorded failure
    is not retried unless `rebuild`. Raises KernelBuildError naming the log, with its last lines."""
    with _lock:
        where, key = _locate()
    if rebuild or not where.library.is_file():
        proc = builder.spawn(where, wait=True, rebuild=rebuild)
        try:
            code = proc.wait(timeout_s)
        except BaseException as e:  # the timeout, or Ctrl-C: the builder and its compilers go too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise KernelBuildError(f"native kernels still building after {timeout_s} s, see {where.log}") from None
            raise
        if code != 0:
            raise KernelBuildError(_failure_message(where))
    with _lock:
        if _process.module is None:
            try:
                _process.module = _load(where, key)
            except ImportError as e:
                raise KernelBuildError(f"native kernels at {where.library} cannot be loaded: {e}") from e
        return _process.module


def _locate() -> tuple[BuildDir, BuildKey]:
    if _process.located is None:
        key = current_key()
        _process.located = (BuildDir.of(key), key)
    return _process.located


def _find_or_start_build() -> ModuleType | None:
    where, key = _locate()
    if where.library.is_file():
        if "unloadable" in _process.said:
            return None
        try:
            return _load(where, key)
        except ImportError as e:
            _say_once(
                "unloadable",
                "native kernels at %s cannot be loaded (%s); running the slower torch paths",
                where.library,
                e,
            )
            return None
    if where.failure() is not None:
        _say_once(
            "failed",
            "native kernels failed to build, see %s; running the slower torch paths (%s)",
            where.log,
            RETRY_HINT,
        )
        return None
    if not _process.spawned and not build_running(where.builder_lock):
        try:
            builder.spawn(where, wait=False)
        except OSError as e:
            _say_once("spawn", "native kernels: the builder process cannot start (%s); running the torch paths", e)
            return None
        _process.spawned = True
        logger.info(
            "building the native kernels in the background (log: %s); this process runs the torch paths", where.log
        )
    return None


def _load(where: BuildDir, key: BuildKey) -> ModuleType:
    module = load_library(where, key)
    missing = missing_kernels(module)
    if missing:
        _say_once("missing", "native kernels on this CPU: %s", "; ".join(missing))
    return module


def _say_once(what: str, message: str, *args) -> None:
    if what not in _process.said:
        _process.said.add(what)
        logger.warning(message, *args)


def _failure_message(where: BuildDir, lines: int = 40) -> str:
    try:
        tail = where.log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    reason = where.failure() or "the builder did not finish"
    return f"native kernels failed to build, see {where.log}: {reason}\n" + "\n".join(tail)
