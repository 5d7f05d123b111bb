"""The Triton GGUF matmuls through Triton's interpreter on the CPU: random valid blocks of each type, x @ W^T against
gguf-py's dequantization (the independent oracle) in float64."""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU
from mistralpy.gpu.gguf_matmul import TYPES, gguf_matmul  # noqa: E402

from .helpers import random_blocks  # noqa: E402


@pytest.mark.parametrize("qtype", list(TYPES))
def test_matches_gguf_dequantization(qtype):
    kind = gguf.GGMLQuantizationType[qtype]
    n, k = 40, 512  # rows not a multiple of the tile; two K-quant super-blocks a row
    blocks = random_blocks(kind, n, k, seed=3, std=0.05)
    weight = torch.from_numpy(gguf.quants.dequantize(blocks, kind).astype(np.float64)).reshape(n, k)
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(4))
    got = gguf_matmul(x, torch.from_numpy(np.ascontiguousarray(blocks)).view(torch.uint8).reshape(n, -1), qtype, n)
    want = x.double() @ weight.T
    torch.testing.assert_close(got.double(), want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)


def test_a_type_without_a_kernel_is_refused():
    with pytest.raises(ValueError, match="no Triton matmul for GGUF type Q3_K"):
        gguf_matmul(torch.zeros(1, 256), torch.zeros(1, 110, dtype=torch.uint8), "Q3_K", 1)
