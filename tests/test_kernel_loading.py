"""How a process finds, loads or starts the native kernels (mistralpy/kernels: __init__, library, build_key,
build_dir), in this process, with an empty build cache (TORCH_EXTENSIONS_DIR under tmp_path) and the builder replaced
by a recorder: nothing is built here."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from mistralpy import kernels
from mistralpy.kernels import build_key, builder, isa_level
from mistralpy.kernels.build_dir import BuildDir
from mistralpy.kernels.builder_lock import BuilderLock, build_running

from . import machine

WARNING = "native kernels failed to build, see {log}; running the slower torch paths"


@pytest.fixture
def fresh_process(monkeypatch):
    """This process as if it had not met the kernels yet (the session's loaded kernels are put back after)."""
    monkeypatch.setattr(kernels, "_process", kernels._Process())


def _where() -> BuildDir:
    return BuildDir.of(build_key.current_key())


def test_a_library_built_for_other_cpu_features_is_not_loaded(tmp_path, monkeypatch, fresh_process):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MISTRALPY_NATIVE", "1")
    host_a, host_b = tmp_path / "cpuinfo_a", tmp_path / "cpuinfo_b"
    monkeypatch.delenv("MISTRALPY_ISA", raising=False)  # each host its detected level: A avx512, B portable
    v3 = "avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
    host_a.write_text(
        f"processor\t: 0\nflags\t\t: fpu sse2 {v3} avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni\n"
    )
    host_b.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    monkeypatch.setattr(isa_level, "_CPUINFO", host_a)
    key_a = build_key.current_key()
    built_on_a = BuildDir.of(key_a)
    built_on_a.path.mkdir(parents=True)
    built_on_a.key_file.write_text(key_a.to_json())
    built_on_a.library.write_bytes(b"AVX-512 code")

    monkeypatch.setattr(isa_level, "_CPUINFO", host_b)
    loads, spawns = [], []
    monkeypatch.setattr(kernels, "load_library", lambda where, key: loads.append(where))
    monkeypatch.setattr(builder, "spawn", lambda where, **kw: spawns.append(where))
    assert kernels.native_module() is None
    assert loads == [] and len(spawns) == 1  # host B builds its own
    assert spawns[0] == BuildDir.of(build_key.current_key()) and spawns[0].path != built_on_a.path
    assert (key_a.isa, build_key.current_key().isa) == ("avx512", "portable")


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


def test_missing_kernels_are_named_once(monkeypatch, fresh_process, caplog):
    """Where the CPU lacks what a kernel needs, the build has no such kernel: one warning names what runs instead."""
    module = SimpleNamespace(has_qmatmul=lambda: False)
    monkeypatch.setattr(kernels, "load_library", lambda where, key: module)
    with caplog.at_level(logging.WARNING, logger="mistralpy.kernels"):
        assert kernels._load(None, None) is module and kernels._load(None, None) is module
    [message] = [r.getMessage() for r in caplog.records]
    assert "no quantized matmul (torch's int4 kernel or dense weights run instead)" in message


def test_the_session_loaded_the_keyed_build(native_kernels):
    machine.require_native()
    where = kernels.build_dir()
    assert Path(native_kernels.__file__) == where.library
    assert json.loads(where.key_file.read_text()) == json.loads(build_key.current_key().to_json())
    assert where.failure() is None
    # the build has exactly the kernels this machine's CPU allows: on a CPU without them, a build that has them was
    # made for another CPU
    assert native_kernels.has_qmatmul() and native_kernels.isa_level() == machine.ISA_LEVEL
