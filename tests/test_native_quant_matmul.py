"""The native quantized matmul (kernels/quant_matmul.cpp, quant/native_linear.py): its panel layout, every batch
shape, its exact torch spelling (quant/qmatmul_reference.py) and its argument checks."""

from __future__ import annotations

import pytest
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from mistralpy.quant.native_linear import (
    NATIVE_TYPES,
    NativeQuantLinear,
    native_qmatmul,
    pack_panels,
    panel_params,
    row_params,
    unpack_panels,
)

from . import machine
from .helpers import random_blocks
from .test_quant_linear import BF16_TOL, assert_matmul_close, reference

Q = GGMLQuantizationType


@pytest.mark.parametrize("width", [4, 8])
@pytest.mark.parametrize("rows", [1, 16, 37])
def test_panel_layout_round_trips(width: int, rows: int) -> None:
    gen = torch.Generator().manual_seed(rows * width)
    q = torch.randint(0, 2**width, (rows, 224), dtype=torch.uint8, generator=gen)
    packed = pack_panels(q, width)
    assert packed.shape == (-(-rows // 16), 16 * 224 * width // 8)  # the last panel padded to 16 rows
    assert torch.equal(unpack_panels(packed, width, 224, slice(0, rows)), q)
    ids = torch.tensor([rows - 1, 0, rows // 2])
    assert torch.equal(unpack_panels(packed, width, 224, ids), q[ids])
    params = torch.randn(rows, 7, generator=gen)
    assert panel_params(params).shape == (-(-rows // 16), 7, 16)
    assert torch.equal(row_params(panel_params(params), ids), params[ids])


def test_panel_lane_order() -> None:
    """One row's first 64-byte block, as the kernel reads its u32 lane: 4 bits: k0 k2 k4 k6 in the low u16's nibbles,
    k1 k3 k5 k7 in the high one's; 8 bits: bytes k0 k2 k1 k3."""
    k = torch.arange(32, dtype=torch.uint8).view(1, 32)
    assert pack_panels(k % 8, 4)[0, :4].tolist() == [0 | 2 << 4, 4 | 6 << 4, 1 | 3 << 4, 5 | 7 << 4]
    assert pack_panels(k, 8)[0, :4].tolist() == [0, 2, 1, 3]
    assert pack_panels(k, 8)[0, 64:68].tolist() == [4, 6, 5, 7]  # row 0's next block follows the 16 rows' first


@pytest.mark.parametrize("qtype", sorted(NATIVE_TYPES), ids=lambda t: t.name)
def test_native_kernel_on_every_batch_shape(native_kernels, qtype: GGMLQuantizationType) -> None:
    """37 weight rows (two panels and a partial one) against 1-17, 47 and 150 rows of x (passes of 8, 4, 2 and 1
    rows; blocks of 64 rows). Each x row's sums are formed in the same order whatever the batch: a row's result is
    bit for bit its result alone."""
    machine.require_native_qmatmul()
    assert native_qmatmul() is not None, "this machine must run the native quantized matmul (tests/machine.py)"
    cols = 256 if GGML_QUANT_SIZES[qtype][0] == 256 else 224
    raw = random_blocks(qtype, 37, cols, seed=3)
    kernels = native_qmatmul()
    layer = NativeQuantLinear.from_gguf_blocks(torch.from_numpy(raw), qtype, (37, cols), None, kernels)
    ref = reference(raw, qtype)
    assert torch.equal(layer.dequantize(), ref)
    alone = {}
    for batch in [*range(1, 18), 47, 150]:
        x = torch.randn(batch, cols, generator=torch.Generator().manual_seed(0)).bfloat16()
        y = kernels.qmatmul(x, *layer._args, False)
        assert_matmul_close(y, x, ref, BF16_TOL)
        for i in range(batch):
            alone.setdefault(i, kernels.qmatmul(x[i : i + 1], *layer._args, False))
            assert torch.equal(y[i : i + 1], alone[i]), (batch, i)


def test_amx_tiles_where_the_cpu_has_them(native_kernels) -> None:
    """The avx512 build on a CPU with AMX multiplies batches of 16+ rows with int8 tiles (qmatmul_amx.h); the batch
    test above then checks them against the reference, and against each row alone (vpdpbusd), bit for bit."""
    machine.require_native_qmatmul()
    assert native_qmatmul().amx_tiles() == machine.AMX


def test_threads_share_every_panel_once(native_kernels) -> None:
    """balanced_for.h: 38 panels (threads' shares and chunks of 4 uneven) times 3 blocks of x rows give one thread's
    bits on 2, 3 and 5 threads (more threads than cores: some wait while the others take their chunks)."""
    machine.require_native_qmatmul()
    raw = random_blocks(Q.Q4_1, 16 * 37 + 5, 224, seed=5)
    kernels = native_qmatmul()
    layer = NativeQuantLinear.from_gguf_blocks(torch.from_numpy(raw), Q.Q4_1, (16 * 37 + 5, 224), None, kernels)
    x = torch.randn(150, 224, generator=torch.Generator().manual_seed(1)).bfloat16()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = kernels.qmatmul(x, *layer._args, False)
        assert_matmul_close(alone, x, reference(raw, Q.Q4_1), BF16_TOL)
        for n in (2, 3, 5):
            torch.set_num_threads(n)
            for _ in range(3):
                assert torch.equal(kernels.qmatmul(x, *layer._args, False), alone), n
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("qtype", sorted(NATIVE_TYPES), ids=lambda t: t.name)
def test_native_kernel_equals_its_torch_spelling(native_kernels, qtype: GGMLQuantizationType, dtype) -> None:
    """qmatmul_reference computes the kernel's arithmetic (int8 x per group, integer sums, fused multiply-adds in its
    order) in torch: the results are equal bit for bit, bf16 and float32 results alike, with a bias, for bf16 and
    float32 x (the avx2 and portable levels' compute dtype). x has outlier channels, an all-zero group and ties at
    half a code. On every ISA level (tests/test_isa_level_builds.py runs this file on the lower ones)."""
    machine.require_native_qmatmul()
    assert native_qmatmul() is not None, "this machine must run the native quantized matmul (tests/machine.py)"
    cols = 256 if GGML_QUANT_SIZES[qtype][0] == 256 else 224
    raw = random_blocks(qtype, 37, cols, seed=7)
    bias = torch.randn(37, generator=torch.Generator().manual_seed(1)).bfloat16()
    layer = NativeQuantLinear.from_gguf_blocks(torch.from_numpy(raw), qtype, (37, cols), bias, native_qmatmul())
    gen = torch.Generator().manual_seed(2)
    for batch in (1, 5, 8, 70):
        x = torch.randn(batch, cols, generator=gen) * torch.rand(cols, generator=gen) * 4
        x[:, 3] *= 30
        x[0, 32:64] = 0
        x[-1, 64:96] = torch.tensor([127.0, 0.5, -0.5, 1.5] * 8)  # x * 127 / max lands on .5: rounds half to even
        x = x.to(dtype)
        fast, ref = layer(x), layer.forward_float32(x)
        layer.use_kernel_reference()
        assert torch.equal(layer(x), fast) and torch.equal(layer.forward_float32(x), ref), batch
        assert fast.dtype == dtype and ref.dtype == torch.float32
        layer._kernel_reference = None
        kernel = native_qmatmul().qmatmul
        assert torch.equal(kernel(x, *layer._args, True).to(dtype), kernel(x, *layer._args, False))  # one rounding


def test_native_kernel_rejects_mismatched_arguments(native_kernels) -> None:
    machine.require_native_qmatmul()
    assert native_qmatmul() is not None, "this machine must run the native quantized matmul (tests/machine.py)"
    kernels = native_qmatmul()
    raw = random_blocks(Q.Q4_0, 20, 64, seed=5)
    layer = NativeQuantLinear.from_gguf_blocks(torch.from_numpy(raw), Q.Q4_0, (20, 64), None, kernels)
    codes, scale, zero, width, offset, n = layer._args
    with pytest.raises(RuntimeError, match="features"):
        kernels.qmatmul(torch.zeros(1, 96, dtype=torch.bfloat16), *layer._args, False)
    with pytest.raises(RuntimeError, match="out_features"):
        kernels.qmatmul(torch.zeros(1, 64, dtype=torch.bfloat16), codes, scale, zero, width, offset, 33, False)
    with pytest.raises(RuntimeError, match="scale"):
        kernels.qmatmul(torch.zeros(1, 64, dtype=torch.bfloat16), codes, scale[:1], zero, width, offset, n, False)
