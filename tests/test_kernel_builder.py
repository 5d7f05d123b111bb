"""The native kernels' builder process (mistralpy/kernels/builder.py) end to end, with a fake compiler that fails at
once (after FAKE_CXX_SLEEP seconds) and an empty build cache (TORCH_EXTENSIONS_DIR under tmp_path): a failure is
logged, marked and not tried again, a killed build's lock is cleared, a failed build fails a test run. Each test
starts a few Python processes (seconds each); the real kernels are built once, by conftest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mistralpy.kernels import build_key, isa_level
from mistralpy.kernels.build_dir import BuildDir
from mistralpy.kernels.builder_lock import build_running

from . import machine

ROOT = Path(__file__).resolve().parent.parent
WARNING = "native kernels failed to build, see {log}; running the slower torch paths"

# A compiler that answers torch's version probes like g++ 12 and fails every compile (after FAKE_CXX_SLEEP seconds),
# counting its compiles in `calls` next to it.
FAKE_CXX = """#!/bin/sh
case "$1" in
  --version) echo "g++ (fake) 12.2.0"; exit 0;;
  -dumpfullversion|-dumpversion) echo "12.2.0"; exit 0;;
  -v) echo "gcc version 12.2.0 (fake)" >&2; exit 0;;
esac
echo "$*" >> "$(dirname "$0")/calls"
sleep "${FAKE_CXX_SLEEP:-0}"
echo "kernel.cpp:1:1: error: deliberately broken (fake compiler)" >&2
exit 1
"""


@pytest.fixture
def fake_cxx(tmp_path, monkeypatch) -> Path:
    """A failing compiler as $CXX and an empty build cache as $TORCH_EXTENSIONS_DIR, here and in child processes."""
    if machine.NINJA is None:
        pytest.skip(machine.why_no_native())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cxx = bin_dir / "g++"  # torch's loader accepts a compiler by its name
    cxx.write_text(FAKE_CXX)
    cxx.chmod(0o755)
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MISTRALPY_NATIVE", "1")
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(machine.NINJA).parent), os.environ["PATH"]]))
    return cxx


def _compiles(cxx: Path) -> int:
    calls = cxx.parent / "calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def _python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def _where() -> BuildDir:
    return BuildDir.of(build_key.current_key())


def test_a_failed_build_is_logged_marked_and_not_tried_again(fake_cxx):
    first = _python("-m", "mistralpy.kernels")
    where = _where()
    assert first.returncode == 1, first.stderr
    assert f"native kernels failed to build, see {where.log}" in first.stderr
    assert "deliberately broken" in where.log.read_text()  # the compiler's output, in the log
    assert "deliberately broken" in first.stderr  # and the log's tail in the message
    assert where.failure() is not None and not where.library.exists()
    compiled = _compiles(fake_cxx)
    assert compiled >= 1

    # the next process (an engine's way in) does not build, and says why once
    snippet = "from mistralpy import kernels; print([kernels.native_module() for _ in range(3)])"
    second = _python("-c", snippet)
    assert second.stdout.strip() == "[None, None, None]", second.stderr
    assert second.stderr.count(WARNING.format(log=where.log)) == 1, second.stderr
    again = _python("-m", "mistralpy.kernels")
    assert again.returncode == 1 and "--rebuild" in again.stderr
    time.sleep(0.5)  # a builder wrongly started in the background would have compiled by now
    assert _compiles(fake_cxx) == compiled

    retried = _python("-m", "mistralpy.kernels", "--rebuild")
    assert retried.returncode == 1 and _compiles(fake_cxx) > compiled


def test_a_killed_builds_lock_is_cleared(fake_cxx, monkeypatch):
    """A builder killed while compiling leaves torch's baton (build/lock): the next builder removes it and builds,
    where torch's loader alone would wait for it forever."""
    where = _where()
    monkeypatch.setenv("FAKE_CXX_SLEEP", "60")
    where.path.parent.mkdir(parents=True)
    with open(where.path.parent / "killed.log", "wb") as out:
        cmd = [sys.executable, "-m", "mistralpy.kernels", "--builder", "--wait"]
        killed = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 120
    while _compiles(fake_cxx) == 0 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _compiles(fake_cxx) >= 1, (where.path.parent / "killed.log").read_text()
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert where.torch_baton.exists() and not build_running(where.builder_lock)

    monkeypatch.setenv("FAKE_CXX_SLEEP", "0")
    compiled = _compiles(fake_cxx)
    rebuilt = _python("-m", "mistralpy.kernels", timeout=120)
    assert rebuilt.returncode == 1 and "deliberately broken" in rebuilt.stderr
    assert _compiles(fake_cxx) > compiled and not where.torch_baton.exists()
    assert f"removing {where.torch_baton}" in where.log.read_text()


def test_a_failed_build_fails_the_test_run(fake_cxx):
    """Where tests/machine.py finds a compiler and ninja, a build that fails is an error of every test that needs the
    kernels, with the compiler's output: never a run of skips."""
    run = _python("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_native_ops.py", timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "the build failed" in out and "deliberately broken" in out
    assert " errors in " in out and "passed" not in out and "skipped" not in out  # every test: an error


def test_the_key_follows_sources_cpu_and_compiler(tmp_path, monkeypatch, fake_cxx):
    key = build_key.current_key()
    assert build_key.current_key().name == key.name  # stable
    assert key.compiler.endswith("g++ (fake) 12.2.0") and key.isa == machine.ISA_LEVEL
    assert key.cflags[:2] == ("-O3", "-fopenmp") and f"-DMISTRALPY_LEVEL_{key.isa.upper()}=1" in key.cflags
    other = "avx2" if key.isa == "portable" and machine.CPU_AVX2 else "portable"
    monkeypatch.setenv("MISTRALPY_ISA", other)  # another level: a build directory of its own
    assert build_key.current_key().isa == other and (other == key.isa or build_key.current_key().name != key.name)
    monkeypatch.setenv("MISTRALPY_ISA", key.isa)
    assert build_key.current_key().name == key.name
    monkeypatch.delenv("CXX")
    assert build_key.current_key().name != key.name
    monkeypatch.setenv("CXX", str(fake_cxx))

    installed, sources = build_key.SOURCE_DIR, tmp_path / "src"
    sources.mkdir()
    for path in build_key.source_files():
        (sources / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(build_key, "SOURCE_DIR", sources)
    assert build_key.current_key().name == key.name
    with open(sources / "isa.h", "a") as f:
        f.write("\n")
    assert build_key.current_key().name != key.name

    monkeypatch.setattr(build_key, "SOURCE_DIR", installed)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu sse2\n")
    monkeypatch.delenv("MISTRALPY_ISA")  # detected: this CPU's level is portable
    monkeypatch.setattr(isa_level, "_CPUINFO", cpuinfo)
    assert build_key.current_key().cpu.endswith(": fpu sse2") and build_key.current_key().name != key.name
