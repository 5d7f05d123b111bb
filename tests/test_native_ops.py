"""The native bf16 elementwise ops (RMSNorm, SiLU-and-mul, rotary) against the torch code they replace.

They round to bf16 where that code does, so they agree with it bit for bit except where a float32 intermediate
differs in its last bit (the norm's summation order, the exp in SiLU) and that flips a bf16 rounding: one bf16 step
per rounding it passes through (Llama's norm rounds twice, bf16(bf16(x r) w): up to two), on a small fraction of
the elements."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams, kernels
from mistralpy.layers.activation import silu_and_mul
from mistralpy.layers.norm import GemmaRMSNorm, RMSNorm
from mistralpy.layers.rotary import RotaryEmbedding

from . import machine


@pytest.fixture
def both(native_kernels):
    """Runs fn(native) without the kernels (the torch path) and with them: -> (torch result, native result)."""
    machine.require_native()

    def run(fn):
        return fn(None), fn(native_kernels)

    return run


def assert_within_bf16_steps(a: torch.Tensor, b: torch.Tensor, steps: int = 1) -> None:
    assert a.dtype == b.dtype == torch.bfloat16 and a.shape == b.shape
    diff = (a.float() - b.float()).abs()
    assert (diff <= a.float().abs() * steps * 2**-7 + 1e-30).all()
    assert (a != b).float().mean() <= 1e-2


@pytest.mark.parametrize("cls", [RMSNorm, GemmaRMSNorm])
def test_rms_norm(both, cls) -> None:
    torch.manual_seed(0)
    norm = cls(576, 1e-5)
    norm.weight.data = torch.randn(576).bfloat16()
    norm.to(torch.bfloat16)
    x = (torch.randn(2, 37, 576) * 3).bfloat16()

    def with_kernels(x):
        def call(native):
            norm.native = native
            return norm(x)

        return call

    # Llama's norm rounds twice (a flipped first rounding moved seed 29's 1.875 two steps: 1.859375); Gemma's once
    steps = 2 if cls is RMSNorm else 1
    plain, native = both(with_kernels(x))
    assert_within_bf16_steps(plain, native, steps)
    strided = torch.randn(5, 1000).bfloat16()[:, 100:676]  # rows with a stride, as a split's parts have
    assert_within_bf16_steps(*both(with_kernels(strided)), steps)


def test_silu_and_mul(both) -> None:
    torch.manual_seed(0)
    x = (torch.randn(3, 7, 2 * 1536) * 4).bfloat16()
    plain, native = both(lambda native: silu_and_mul(x, native))
    assert native.shape == (3, 7, 1536)
    assert_within_bf16_steps(plain, native)


def test_rotary_is_bit_exact(both) -> None:
    rotary = RotaryEmbedding(64, 4096, 10000.0)
    rotary.build_cache()
    qkv = torch.randn(7, 9 * 64 + 2 * 3 * 64).bfloat16()
    q, k, _ = qkv.split([9 * 64, 3 * 64, 3 * 64], dim=-1)  # strided views, as the model passes them
    q, k = q.view(7, 9, 64), k.view(7, 3, 64)
    positions = torch.tensor([0, 5, 9, 100, 4000, 3, 1])

    def run(native):
        rotary._memo, rotary.native = None, native
        return rotary(positions, q, k)

    (q0, k0), (q1, k1) = both(run)
    assert torch.equal(q0, q1) and torch.equal(k0, k1)


def test_an_engine_keeps_the_kernels_it_started_with(native_kernels, tiny_llama, monkeypatch):
    """Layers call the kernels their model was bound to, not whatever the process loaded since: an engine started
    without kernels gives the same logprobs after another engine loads them (and the kernels do change them)."""
    machine.require_native()
    prompt = {"prompt_token_ids": [5, 100, 2000, 31, 7, 9, 400, 12]}
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=3, ignore_eos=True)

    def engine(with_kernels: bool) -> LLM:
        with monkeypatch.context() as m:
            if not with_kernels:
                m.setattr(kernels, "native_module", lambda: None)
                m.setattr(kernels._process, "module", None)
            return LLM(str(tiny_llama[2]), dtype="bfloat16")

    def logprobs(llm: LLM) -> list[dict]:
        [out] = llm.generate([prompt], params)
        return [{t: lp.logprob for t, lp in step.items()} for step in out.outputs[0].logprobs]

    without = engine(with_kernels=False)
    reference = logprobs(without)
    assert logprobs(engine(with_kernels=True)) != reference  # the kernels round differently in bf16
    assert kernels.loaded() is native_kernels
    assert logprobs(without) == reference
