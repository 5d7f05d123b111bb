"""The native kernels' life cycle (mistralpy/kernels): build keys, the builder process, failure markers, locks, loading.

Hermetic and fast: each test has its own build cache (TORCH_EXTENSIONS_DIR under tmp_path) and, where a build runs,
a fake compiler that fails at once (tests/machine.py's real compiler builds the real kernels once, in conftest)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mistralpy import kernels
from mistralpy.kernels import build_key, builder
from mistralpy.kernels.build_dir import BuildDir
from mistralpy.kernels.builder_lock import BuilderLock, build_running

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


@pytest.fixture
def fresh_process(monkeypatch):
    """This process as if it had not met the kernels yet (the session's loaded kernels are put back after)."""
    monkeypatch.setattr(kernels, "_process", kernels._Process())


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


def test_a_library_built_for_other_cpu_features_is_not_loaded(tmp_path, monkeypatch, fresh_process):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MISTRALPY_NATIVE", "1")
    host_a, host_b = tmp_path / "cpuinfo_a", tmp_path / "cpuinfo_b"
    host_a.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni\n")
    host_b.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    monkeypatch.setattr(build_key, "_CPUINFO", host_a)
    key_a = build_key.current_key()
    built_on_a = BuildDir.of(key_a)
    built_on_a.path.mkdir(parents=True)
    built_on_a.key_file.write_text(key_a.to_json())
    built_on_a.library.write_bytes(b"AVX-512 code")

    monkeypatch.setattr(build_key, "_CPUINFO", host_b)
    loads, spawns = [], []
    monkeypatch.setattr(kernels, "load_library", lambda where, key: loads.append(where))
    monkeypatch.setattr(builder, "spawn", lambda where, **kw: spawns.append(where))
    assert kernels.native_module() is None
    assert loads == [] and len(spawns) == 1  # host B builds its own
    assert spawns[0] == BuildDir.of(build_key.current_key()) and spawns[0].path != built_on_a.path


def test_a_library_whose_recorded_key_differs_is_not_loaded(tmp_path, monkeypatch, fresh_process, caplog):
    """A build directory copied from another host under this host's name: the recorded key says so."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MISTRALPY_NATIVE", "1")
    where = _where()
    where.path.mkdir(parents=True)
    other = json.loads(build_key.current_key().to_json()) | {"cpu": "x86_64: avx512f avx512_bf16"}
    where.key_file.write_text(json.dumps(other))
    where.library.write_bytes(b"\x7fELF")
    with caplog.at_level(logging.WARNING, logger="mistralpy.kernels"):
        assert kernels.native_module() is None and kernels.native_module() is None
    [record] = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert "built for another key (differs in: cpu)" in record.getMessage()


def test_the_failure_warning_is_given_once_and_nothing_builds(tmp_path, monkeypatch, fresh_process, caplog):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MISTRALPY_NATIVE", "1")
    where = _where()
    where.path.mkdir(parents=True)
    where.record_failure("RuntimeError: Error building extension")
    spawns = []
    monkeypatch.setattr(builder, "spawn", lambda where, **kw: spawns.append(where))
    with caplog.at_level(logging.WARNING, logger="mistralpy.kernels"):
        assert [kernels.native_module() for _ in range(3)] == [None] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(WARNING.format(log=where.log))
    assert spawns == []


def test_an_engine_never_compiles_and_starts_one_builder(tmp_path, monkeypatch, fresh_process):
    import torch.utils.cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MISTRALPY_NATIVE", "1")

    def compile_here(*args, **kwargs):
        raise AssertionError("compiled in the calling process")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", compile_here)
    spawns = []
    monkeypatch.setattr(builder, "spawn", lambda where, **kw: spawns.append(kw))
    assert [kernels.native_module() for _ in range(3)] == [None] * 3
    assert spawns == [{"wait": False}]  # detached, once


def test_no_builder_is_started_while_one_is_at_work(tmp_path, monkeypatch, fresh_process):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MISTRALPY_NATIVE", "1")
    spawns = []
    monkeypatch.setattr(builder, "spawn", lambda where, **kw: spawns.append(where))
    with BuilderLock(_where().builder_lock) as lock:
        assert lock.acquire(wait=False)
        assert build_running(_where().builder_lock)
        assert kernels.native_module() is None and spawns == []
    assert not build_running(_where().builder_lock)


def test_the_library_is_renamed_into_place(tmp_path, monkeypatch):
    """The builder copies the finished library under a temporary name in its final directory, then renames it: a
    process that finds the library finds all of it."""
    where = BuildDir(tmp_path / "mistralpy_native_x", "mistralpy_native_x")
    where.torch_dir.mkdir(parents=True)
    (where.torch_dir / where.library.name).write_bytes(b"library" * 1000)
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((Path(src), Path(dst), Path(dst).exists()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    builder._install(where, build_key.current_key())
    src, dst, existed = next(r for r in renames if r[1] == where.library)
    assert src.parent == dst.parent and src != dst and not existed
    assert where.library.read_bytes() == b"library" * 1000
    assert json.loads(where.key_file.read_text()) == json.loads(build_key.current_key().to_json())
    assert sorted(p.name for p in where.path.iterdir()) == ["build", "key.json", where.library.name]


def test_the_key_follows_sources_cpu_and_compiler(tmp_path, monkeypatch, fake_cxx):
    key = build_key.current_key()
    assert build_key.current_key().name == key.name  # stable
    assert key.compiler.endswith("g++ (fake) 12.2.0") and key.cflags == ("-O3", "-march=native", "-fopenmp")
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
    monkeypatch.setattr(build_key, "_CPUINFO", cpuinfo)
    assert build_key.current_key().cpu.endswith(": fpu sse2") and build_key.current_key().name != key.name


def test_missing_kernels_are_named_once(monkeypatch, fresh_process, caplog):
    """Where the CPU lacks what a kernel needs, the build has no such kernel: one warning names what runs instead."""
    module = SimpleNamespace(has_qmatmul=lambda: False, has_prefill_attention=lambda: True)
    monkeypatch.setattr(kernels, "load_library", lambda where, key: module)
    with caplog.at_level(logging.WARNING, logger="mistralpy.kernels"):
        assert kernels._load(None, None) is module and kernels._load(None, None) is module
    [message] = [r.getMessage() for r in caplog.records]
    assert "no quantized matmul (it needs AVX-512 BF16 and VNNI; torch's int4 kernel" in message
    assert "prefill attention" not in message


def test_the_session_loaded_the_keyed_build(native_kernels):
    machine.require_native()
    where = kernels.build_dir()
    assert Path(native_kernels.__file__) == where.library
    assert json.loads(where.key_file.read_text()) == json.loads(build_key.current_key().to_json())
    assert where.failure() is None
    # the build has exactly the kernels this machine's CPU allows: on a CPU without them, a build that has them was
    # made for another CPU
    assert native_kernels.has_qmatmul() == machine.AVX512_VNNI
    assert native_kernels.has_prefill_attention() == machine.AVX512_BF16


def test_a_failed_build_fails_the_test_run(fake_cxx):
    """Where tests/machine.py finds a compiler and ninja, a build that fails is an error of every test that needs the
    kernels, with the compiler's output: never a run of skips."""
    run = _python("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_native_ops.py", timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "the build failed" in out and "deliberately broken" in out
    assert "4 errors" in out and "skipped" not in out
