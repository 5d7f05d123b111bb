"""The native bf16 elementwise ops (RMSNorm, SiLU-and-mul, rotary) against the torch code they replace.

They round to bf16 where that code does, so they agree with it bit for bit except where a float32 intermediate
differs in its last bit (the norm's summation order, the exp in SiLU) and that flips a bf16 rounding: at most one
bf16 step, on a small fraction of the elements."""

from __future__ import annotations

import pytest
import torch

from mistralpy import kernels
from mistralpy.layers.activation import silu_and_mul
from mistralpy.layers.norm import GemmaRMSNorm, RMSNorm
from mistralpy.layers.rotary import RotaryEmbedding

from . import machine


@pytest.fixture
def both(native_kernels, monkeypatch):
    """Runs a function with the kernels off (the torch path) and on: -> (torch result, native result)."""
    machine.require_native()

    def run(fn):
        monkeypatch.setattr(kernels._process, "module", None)
        plain = fn()
        monkeypatch.setattr(kernels._process, "module", native_kernels)
        return plain, fn()

    return run


def assert_within_one_bf16_step(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype == torch.bfloat16 and a.shape == b.shape
    diff = (a.float() - b.float()).abs()
    assert (diff <= a.float().abs() * 2**-7 + 1e-30).all()
    assert (a != b).float().mean() <= 1e-2


@pytest.mark.parametrize("cls", [RMSNorm, GemmaRMSNorm])
def test_rms_norm(both, cls) -> None:
    norm = cls(576, 1e-5)
    norm.weight.data = torch.randn(576).bfloat16()
    norm.to(torch.bfloat16)
    x = (torch.randn(2, 37, 576) * 3).bfloat16()
    plain, native = both(lambda: norm(x))
    assert_within_one_bf16_step(plain, native)
    strided = torch.randn(5, 1000).bfloat16()[:, 100:676]  # rows with a stride, as a split's parts have
    assert_within_one_bf16_step(*both(lambda: norm(strided)))


def test_silu_and_mul(both) -> None:
    x = (torch.randn(3, 7, 2 * 1536) * 4).bfloat16()
    plain, native = both(lambda: silu_and_mul(x))
    assert native.shape == (3, 7, 1536)
    assert_within_one_bf16_step(plain, native)


def test_rotary_is_bit_exact(both) -> None:
    rotary = RotaryEmbedding(64, 4096, 10000.0)
    rotary.build_cache()
    qkv = torch.randn(7, 9 * 64 + 2 * 3 * 64).bfloat16()
    q, k, _ = qkv.split([9 * 64, 3 * 64, 3 * 64], dim=-1)  # strided views, as the model passes them
    q, k = q.view(7, 9, 64), k.view(7, 3, 64)
    positions = torch.tensor([0, 5, 9, 100, 4000, 3, 1])

    def run():
        rotary._memo = None
        return rotary(positions, q, k)

    (q0, k0), (q1, k1) = both(run)
    assert torch.equal(q0, q1) and torch.equal(k0, k1)
