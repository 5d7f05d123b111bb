"""Our torch dequantization against gguf-py's numpy reference, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from mistralpy.errors import ModelLoadError
from mistralpy.quant.gguf_dequant import SUPPORTED_TYPES, dequantize

Q = GGMLQuantizationType
QUANTIZED_TYPES = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
# gguf-py can quantize these (the K-quants it can only dequantize)
QUANTIZABLE_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]
# byte offsets of each block's f16 scale fields: random bytes there could be inf/nan, so they are set to finite values
F16_FIELDS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}  # fmt: skip


def _reference(raw: np.ndarray, qtype: GGMLQuantizationType) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(quants.dequantize(raw, qtype), dtype=np.float32))


def _random_blocks(qtype: GGMLQuantizationType, rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block_size, type_size), dtype=np.uint8)
    for offset in F16_FIELDS[qtype]:
        scale = rng.standard_normal((blocks.shape[0], 1)).astype(np.float16)
        blocks[:, offset : offset + 2] = scale.view(np.uint8)
    return blocks.reshape(rows, -1)


def test_supported_types_are_the_promised_ones() -> None:
    assert set(QUANTIZABLE_TYPES) | set(QUANTIZED_TYPES) == SUPPORTED_TYPES


@pytest.mark.parametrize("qtype", QUANTIZED_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_blocks_match_gguf(qtype: GGMLQuantizationType, seed: int) -> None:
    rows, cols = 5, 4 * GGML_QUANT_SIZES[qtype][0]
    raw = _random_blocks(qtype, rows, cols, seed)
    ours = dequantize(raw, qtype, (rows, cols))
    assert ours.dtype == torch.float32 and ours.shape == (rows, cols)
    assert torch.equal(ours, _reference(raw, qtype))


@pytest.mark.parametrize("qtype", QUANTIZABLE_TYPES, ids=lambda t: t.name)
def test_quantized_data_matches_gguf(qtype: GGMLQuantizationType) -> None:
    data = np.random.default_rng(2).standard_normal((6, 128)).astype(np.float32)
    raw = np.ascontiguousarray(quants.quantize(data, qtype)).view(np.uint8).reshape(6, -1)
    ours = dequantize(raw, qtype, (6, 128))
    assert torch.equal(ours, _reference(raw, qtype))
    if qtype == Q.F32:
        assert torch.equal(ours, torch.from_numpy(data))


def test_accepts_torch_input_and_higher_rank_shapes() -> None:
    raw = _random_blocks(Q.Q4_K, 6, 256, seed=3)
    ours = dequantize(torch.from_numpy(raw), Q.Q4_K, (2, 3, 256))
    assert torch.equal(ours, _reference(raw, Q.Q4_K).reshape(2, 3, 256))


def test_accepts_read_only_and_unaligned_input() -> None:
    raw = _random_blocks(Q.Q8_0, 2, 64, seed=4)
    read_only = raw.copy()
    read_only.flags.writeable = False
    assert torch.equal(dequantize(read_only, Q.Q8_0, (2, 64)), _reference(raw, Q.Q8_0))
    shifted = torch.cat([torch.zeros(1, dtype=torch.uint8), torch.from_numpy(raw.reshape(-1))])[1:]
    assert torch.equal(dequantize(shifted, Q.Q8_0, (2, 64)), _reference(raw, Q.Q8_0))


def test_unsupported_type_is_named() -> None:
    with pytest.raises(ModelLoadError, match="IQ2_XXS"):
        dequantize(np.zeros(66, dtype=np.uint8), Q.IQ2_XXS, (256,))


def test_wrong_byte_count_is_an_error() -> None:
    with pytest.raises(ModelLoadError, match="bytes"):
        dequantize(np.zeros(17, dtype=np.uint8), Q.Q4_0, (32,))
    with pytest.raises(ModelLoadError, match="block size"):
        dequantize(np.zeros(18, dtype=np.uint8), Q.Q4_0, (2, 16))
