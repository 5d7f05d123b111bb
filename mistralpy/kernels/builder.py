"""The builder process (`python -m mistralpy.kernels --builder`): compiles the kernels of one build key.

Started detached by a process that found no build (which goes on serving on the torch paths), or waited for by
`kernels.build()`; no serving process compiles. Its stdout and stderr are the build directory's build.log. Under the
builder lock: a library already there, or a recorded failure, ends it; else it removes a dead build's baton,
compiles with torch's extension loader (which imports the result: a library that does not load is a failed build),
and renames the library into place, or records the failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from .build_dir import RETRY_HINT, BuildDir, write_atomically
from .build_key import BuildKey, source_files
from .builder_lock import BuilderLock, clear_stale_baton

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the child imports this very mistralpy


def spawn(where: BuildDir, *, wait: bool, rebuild: bool = False) -> subprocess.Popen:
    """Start the builder in a session of its own (a process group to kill whole); it outlives its parent, and runs
    at low priority, unless the parent waits for it."""
    where.path.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mistralpy.kernels", "--builder"] + ["--wait"] * wait + ["--rebuild"] * rebuild
    paths = [_PACKAGE_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    # appended to, not truncated: a builder that finds another at work must not cut that one's log
    with open(where.log, "ab") as log:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def run(where: BuildDir, key: BuildKey, *, wait: bool, rebuild: bool) -> int:
    """The builder's work. Exit code 0: built, found built, or left to a builder already at work; 1: failed."""
    lock = BuilderLock(where.builder_lock)
    if not lock.acquire(wait=wait, patience_s=2.0):
        return 0
    with lock:
        if rebuild:
            where.forget()
        if where.library.is_file():
            return 0
        if where.failure() is not None:
            return 1
        if not wait:
            os.nice(10)  # a background build yields the CPU to the engines serving meanwhile
        _start_log(where, key)
        try:
            clear_stale_baton(where.torch_baton, lock)
            _compile(where, key)
            _install(where, key)
        except Exception as e:  # no compiler, no ninja, a compile error, a library that does not load
            if not isinstance(e, (RuntimeError, OSError, ImportError)):
                traceback.print_exc()  # a fault of the builder itself: its stack (else the compiler's output says)
            reason = f"{type(e).__name__}: {next(iter(str(e).strip().splitlines()), '')}"
            where.record_failure(reason)
            print(f"\nnative kernels failed to build ({reason}); {RETRY_HINT}", flush=True)
            return 1
    print(f"\nbuilt {where.library}", flush=True)
    return 0


def _start_log(where: BuildDir, key: BuildKey) -> None:
    """Empty the log (this build's output replaces the last one's) and head it with the key."""
    sys.stdout.flush()
    fd = sys.stdout.fileno()
    to_log = where.log.exists() and os.path.samestat(os.fstat(fd), os.stat(where.log))
    if to_log:  # else run by hand, writing elsewhere: nothing to empty
        os.ftruncate(fd, 0)
    print(f"building {where.library}\nkey: {key.to_json()}\n", flush=True)


def _compile(where: BuildDir, key: BuildKey) -> None:
    _put_ninja_on_path()
    from torch.utils.cpp_extension import load

    where.torch_dir.mkdir(parents=True, exist_ok=True)
    sources = [str(p) for p in source_files((".cpp",))]
    load(
        name=where.name,
        sources=sources,
        extra_cflags=list(key.cflags),
        extra_ldflags=list(key.ldflags),
        build_directory=str(where.torch_dir),
        verbose=True,  # ninja writes the compiler's output to our stdout: the log
    )


def _install(where: BuildDir, key: BuildKey) -> None:
    """The key first, then the library, each written under a temporary name and renamed into place."""
    built = where.torch_dir / where.library.name
    write_atomically(where.key_file, key.to_json().encode())
    write_atomically(where.library, built.read_bytes())
    where.failure_marker.unlink(missing_ok=True)


def _put_ninja_on_path() -> None:
    """torch's loader runs `ninja` from PATH; the `ninja` package (a dependency) installs it next to this Python,
    which is not on PATH when that Python is run by its full path without its environment activated."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return
    if ninja.BIN_DIR:
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
