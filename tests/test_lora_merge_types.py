"""Merging into the GGUF types beyond Q4_0/Q4_1/Q8_0/Q4_K. Q5_0 and Q5_1: the merged blocks are gguf-py's
quantization (the oracle) of the dequantized base plus the delta, byte for byte. Q2_K, Q3_K, Q5_K, Q6_K: gguf-py has
no quantizer for them, so the blocks are decoded by gguf-py's dequantizer and checked against the float64 target with
the error bound of a direct scale choice (half a sub-block step, plus the offset's rounding for the affine types),
derived here from the target alone."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from mistralpy.lora.merge import requantize
from mistralpy.quant.isq import quantize
from mistralpy.quant.quantized_linear import GGUFLinear

T = gguf.GGMLQuantizationType
ROWS, COLS = 8, 512


def _target(seed: int) -> np.ndarray:
    """Rows of very different magnitudes (f16 subnormal scales included), an all-zero block, a constant block."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, COLS, generator=g) * torch.logspace(-4, 0, ROWS).unsqueeze(1)
    x[0, :256], x[1, 256:] = 0.0, 0.75
    return x.double().numpy()


def _merged(qtype: T, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """A GGUF linear of `qtype` merged with a random delta -> (the float32 target: gguf-py's decoding of the base plus
    the delta, the merged layer's blocks as `quantize` writes them); the merged layer holds those blocks' weights."""
    base = torch.from_numpy(_target(seed)).float()
    raw = quantize(base, qtype)
    layer = GGUFLinear(raw, qtype, (ROWS, COLS), None)
    delta = torch.from_numpy(_target(seed + 1) * 0.1).float()
    target = gguf.quants.dequantize(raw.numpy(), qtype).reshape(ROWS, COLS) + delta.numpy()
    merged = requantize(layer, delta, torch.float32, "model.layers.0.mlp.down_proj")
    blocks = quantize(torch.from_numpy(target), qtype)
    decoded = gguf.quants.dequantize(blocks.numpy(), qtype).reshape(ROWS, COLS)
    assert merged.qtype == qtype and np.allclose(merged.dequantize().numpy(), decoded, rtol=1e-6, atol=0)
    return target, blocks


@pytest.mark.parametrize("qtype", [T.Q5_0, T.Q5_1])
def test_q5_merge_equals_gguf_py(qtype):
    base = torch.from_numpy(_target(0)).float()
    assert torch.equal(quantize(base, qtype), torch.from_numpy(gguf.quants.quantize(base.numpy(), qtype)))
    target, blocks = _merged(qtype, 3)
    assert np.array_equal(blocks.numpy(), gguf.quants.quantize(target, qtype))


# (sub-block size, symmetric codes' half range or affine top code, scale codes' top)
SYMMETRIC = {T.Q6_K: (16, 32, 127), T.Q3_K: (16, 4, 31)}
AFFINE = {T.Q5_K: (32, 31, 63), T.Q2_K: (16, 3, 15)}
F16_UP = 1 + 2**-10  # a scale rounded up to f16 grows by one f16 step at most (2**-10 relative, or 2**-24 absolute)


def _bound(target: np.ndarray, qtype: T) -> np.ndarray:
    """Each weight's largest error: half its sub-block's step (the step's code rounded up: + the super-block scale
    d), plus the offset's rounding up (dmin) for the affine types; per 256-weight super-block."""
    if qtype in SYMMETRIC:
        sub, half, top = SYMMETRIC[qtype]
        xs = target.reshape(-1, 256 // sub, sub)
        scale = np.abs(xs).max(-1) / (half - 0.5)
        d = scale.max(-1, keepdims=True) / top * F16_UP + 2**-24
        bound = (scale + d) / 2
    else:
        sub, top, code_top = AFFINE[qtype]
        xs = target.reshape(-1, 256 // sub, sub)
        offset = -np.minimum(xs.min(-1), 0)
        scale = (xs.max(-1) + offset) / (top + 0.5)
        d = scale.max(-1, keepdims=True) / code_top * F16_UP + 2**-24
        dmin = offset.max(-1, keepdims=True) / code_top * F16_UP + 2**-24
        bound = (scale + d) / 2 + dmin
    slack = 1e-6 * np.abs(xs).max(-1)  # float32 arithmetic
    return np.broadcast_to((bound + slack)[..., None], xs.shape).reshape(target.shape)


@pytest.mark.parametrize("qtype", [T.Q6_K, T.Q5_K, T.Q3_K, T.Q2_K])
def test_kquant_merge_within_its_bound(qtype):
    for seed in (3, 5):
        target32, blocks = _merged(qtype, seed)
        target = target32.astype(np.float64)
        got = gguf.quants.dequantize(blocks.numpy(), qtype).reshape(ROWS, COLS).astype(np.float64)
        bound = _bound(target, qtype)
        assert (np.abs(got - target) <= bound).all()
        assert np.abs(got - target).max() > 0  # rounding happened
        # the bound is not loose: the typical error is well inside half the largest possible step
        assert np.sqrt(((got - target) ** 2).mean()) < bound.max()
