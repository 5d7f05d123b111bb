"""`mistralpy bench --isa avx2|portable` holds torch's own kernels to that level (bench/torch_isa.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mistralpy.bench import torch_isa

from . import machine

ROOT = Path(__file__).resolve().parents[1]


AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
HELD = tuple(AVX2)  # the variables a level holds


def test_missing_env_names_what_torch_reads():
    assert torch_isa.missing_env("avx2", {}) == AVX2
    assert torch_isa.missing_env("avx2", AVX2) == {}
    assert torch_isa.missing_env("avx2_vnni", AVX2) == {
        "ONEDNN_MAX_CPU_ISA": "AVX2_VNNI", "MKL_ENABLE_INSTRUCTIONS": "AVX2_E1"
    }  # fmt: skip
    assert torch_isa.missing_env("portable", {"ATEN_CPU_CAPABILITY": "avx2"}) == {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"
    }  # fmt: skip
    for level in ("avx512", "auto", None):
        assert torch_isa.missing_env(level, {}) == {}


def test_hold_torch_to_reexecutes_only_when_needed(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "mistralpy", "bench", "--isa", "avx2"])
    for name, value in AVX2.items():
        monkeypatch.setenv(name, value)
    torch_isa.hold_torch_to("avx2")
    torch_isa.hold_torch_to("avx512")
    assert calls == []
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    torch_isa.hold_torch_to("avx2")
    ((path, argv, env),) = calls
    assert path == sys.executable and argv == [sys.executable, "-m", "mistralpy", "bench", "--isa", "avx2"]
    assert {name: env[name] for name in HELD} == AVX2


@pytest.mark.skipif(sys.platform != "linux", reason="os.execve re-execution as on the benchmark machines")
def test_reexecuted_process_runs_torch_at_avx2():
    code = (
        "from mistralpy.bench.torch_isa import hold_torch_to; hold_torch_to('avx2'); "
        "import torch; print(torch.backends.cpu.get_cpu_capability())"
    )
    out = run_held(code, {})
    assert out.stdout.strip().splitlines()[-1] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


@pytest.mark.skipif(sys.platform != "linux", reason="os.execve re-execution as on the benchmark machines")
@pytest.mark.skipif("mkl" not in torch.__config__.show().lower(), reason="torch's BLAS is not MKL")
@pytest.mark.skipif(
    machine.CPU_VENDOR != "GenuineIntel",
    reason=f"MKL's banner names the instructions it dispatched to on Intel CPUs only, not {machine.CPU_VENDOR!r}",
)
def test_reexecuted_process_runs_mkl_at_avx2():
    """The transformers peer's float32 matmuls are MKL's sgemm: MKL itself names the instructions it dispatched to."""
    code = (
        "from mistralpy.bench.torch_isa import hold_torch_to; hold_torch_to('avx2'); "
        "import torch; torch.ones(64, 64) @ torch.ones(64, 64)"
    )
    banner = next(line for line in run_held(code, {"MKL_VERBOSE": "1"}).stdout.splitlines() if "oneMKL" in line)
    assert "AVX2" in banner.replace("-", "") and "AVX512" not in banner.replace("-", ""), banner


def run_held(code: str, extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in HELD} | extra
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out
