"""The Triton element-wise kernels through Triton's interpreter on the CPU, against torch written here in float64."""

from __future__ import annotations

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU
from mistralpy.gpu import elementwise  # noqa: E402


def rms(x, w, eps, offset):
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (offset + w.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_rms_norm(dtype, offset):
    torch.manual_seed(0)
    x, w = torch.randn(5, 3, 96, dtype=dtype), torch.randn(96, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(elementwise.rms_norm(x, w, 1e-6, offset).double(), rms(x, w, 1e-6, offset),
                               atol=tol, rtol=tol)  # fmt: skip
    residual = torch.randn(5, 3, 96, dtype=dtype)
    total = x.double() + residual.double()
    out = elementwise.rms_norm(x, w, 1e-6, offset, residual=residual)
    torch.testing.assert_close(residual.double(), total, atol=tol, rtol=tol)
    torch.testing.assert_close(out.double(), rms(total, w, 1e-6, offset), atol=tol * 4, rtol=tol * 4)


@pytest.mark.parametrize("rot", [64, 32])
def test_rotary_in_place(rot):
    torch.manual_seed(1)
    q = torch.randn(7, 4, 64)
    angles = torch.rand(7, rot // 2) * 6
    want = q.double().clone()
    x1, x2 = want[..., : rot // 2].clone(), want[..., rot // 2 : rot].clone()
    cos, sin = angles.double().cos()[:, None], angles.double().sin()[:, None]
    want[..., : rot // 2], want[..., rot // 2 : rot] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    got = elementwise.rotary_(q, angles.cos(), angles.sin())
    assert got is q
    torch.testing.assert_close(q.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["silu", "gelu_tanh"])
def test_gated_activation(kind):
    torch.manual_seed(2)
    x = torch.randn(3, 2, 2 * 1500)
    gate, up = x.double()[..., :1500], x.double()[..., 1500:]
    act = torch.nn.functional.silu(gate) if kind == "silu" else torch.nn.functional.gelu(gate, approximate="tanh")
    torch.testing.assert_close(elementwise.gated_activation(x, kind).double(), act * up, atol=1e-5, rtol=1e-5)
