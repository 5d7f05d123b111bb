"""ISA levels as data (mistralpy/kernels/isa_level.py): which level a CPU's flags give, MISTRALPY_ISA forcing one
(a level the CPU lacks is a clear error), and each level naming a build of its own (build_key)."""

from __future__ import annotations

import pytest

from mistralpy.kernels import build_key, isa_level
from mistralpy.kernels.isa_level import IsaLevelError, detected_level

from . import machine

V3 = "fpu sse2 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
ZEN4 = V3 + " avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni"


@pytest.mark.parametrize(
    ("arch", "flags", "level"),
    [
        ("x86_64", ZEN4, "avx512"),
        ("x86_64", ZEN4 + " avx_vnni", "avx512"),  # Sapphire Rapids: AVX-512 first
        ("x86_64", V3 + " avx512f avx512bw avx512vl avx512dq avx512_vnni", "avx2"),  # Ice Lake: no AVX-512 BF16
        ("x86_64", V3 + " avx_vnni", "avx2_vnni"),  # Alder Lake, Zen 5 without AVX-512
        ("x86_64", V3, "avx2"),  # Haswell .. Zen 3
        ("x86_64", V3.replace(" fma", "") + " avx_vnni", "portable"),  # AVX-VNNI alone is not x86-64-v3
        ("x86_64", V3.replace(" f16c", ""), "portable"),  # not all of x86-64-v3
        ("x86_64", "fpu sse2", "portable"),
        ("aarch64", "fp asimd asimddp bf16", "portable"),
        ("aarch64", ZEN4, "portable"),  # x86 flags on another machine say nothing
    ],
)
def test_the_level_follows_the_cpu_flags(arch: str, flags: str, level: str) -> None:
    assert detected_level(arch, frozenset(flags.split())).name == level


def _cpu(tmp_path, monkeypatch, flags: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(isa_level, "_CPUINFO", cpuinfo)
    monkeypatch.setattr(isa_level.platform, "machine", lambda: "x86_64")


def test_forcing_a_level(tmp_path, monkeypatch) -> None:
    _cpu(tmp_path, monkeypatch, ZEN4 + " avx_vnni")
    monkeypatch.delenv(isa_level.ENV_VAR, raising=False)
    assert isa_level.current_level().name == "avx512"
    for name in ("avx2", "portable", "AVX2", "auto", "avx2_vnni"):
        monkeypatch.setenv(isa_level.ENV_VAR, name)
        assert isa_level.current_level().name == ("avx512" if name == "auto" else name.lower())


def test_forcing_a_level_the_cpu_lacks_is_an_error(tmp_path, monkeypatch) -> None:
    _cpu(tmp_path, monkeypatch, V3)
    monkeypatch.setenv(isa_level.ENV_VAR, "avx512")
    with pytest.raises(IsaLevelError, match=r"MISTRALPY_ISA=avx512: this CPU cannot run that level \(it lacks avx512"):
        isa_level.current_level()
    with pytest.raises(IsaLevelError, match="lacks avx512_bf16"):  # the key, too: no build for it is looked for
        build_key.current_key()
    monkeypatch.setenv(isa_level.ENV_VAR, "avx2_vnni")
    with pytest.raises(IsaLevelError, match=r"MISTRALPY_ISA=avx2_vnni: this CPU .* \(it lacks avx_vnni\)"):
        isa_level.current_level()
    monkeypatch.setenv(isa_level.ENV_VAR, "sse9")
    with pytest.raises(IsaLevelError, match="'sse9' is not a level; choose one of: auto, avx512, avx2_vnni, avx2, por"):
        isa_level.current_level()


def test_each_level_has_a_build_of_its_own(tmp_path, monkeypatch) -> None:
    _cpu(tmp_path, monkeypatch, ZEN4 + " avx_vnni")
    keys = {}
    for name in isa_level.LEVELS:
        monkeypatch.setenv(isa_level.ENV_VAR, name)
        keys[name] = build_key.current_key()
    assert len({k.name for k in keys.values()}) == 4 and [k.isa for k in keys.values()] == list(isa_level.LEVELS)
    assert "-march=native" in keys["avx512"].cflags and "-march=x86-64-v3" in keys["avx2"].cflags
    assert "-mavxvnni" in keys["avx2_vnni"].cflags and "-mavxvnni" not in keys["avx2"].cflags
    assert not any(f.startswith("-march") for f in keys["portable"].cflags)
    for name, key in keys.items():
        assert f"-DMISTRALPY_LEVEL_{name.upper()}=1" in key.cflags


def test_this_machine_runs_the_level_the_tests_state() -> None:
    """tests/machine.py derives the level from /proc/cpuinfo and MISTRALPY_ISA on its own."""
    assert isa_level.current_level().name == machine.ISA_LEVEL


def test_auto_dtype_follows_the_level(monkeypatch) -> None:
    """bfloat16 on avx512, avx2_vnni and avx2 (measured faster there: the native decoder stack runs), float32 on
    portable; the weights stay quantized on every level."""
    import torch

    from mistralpy.config import resolve_dtype
    from mistralpy.loader.quantized_weights import keep_quantized

    levels = ["portable"] + ["avx2"] * machine.CPU_AVX2 + ["avx2_vnni"] * machine.CPU_AVX2_VNNI
    for name in levels + ["avx512"] * machine.CPU_AVX512:
        monkeypatch.setenv(isa_level.ENV_VAR, name)
        bf16 = name != "portable"
        assert resolve_dtype("auto") == (torch.bfloat16 if bf16 else torch.float32), name
        assert keep_quantized("auto", resolve_dtype("auto"))
