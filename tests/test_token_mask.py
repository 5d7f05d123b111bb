"""Structured output's token masks applied to logits, by the native kernel and by the torch path, against a naive
per-token reference written here (Python integers: bit t % 32 of word t // 32 allows token t)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from mistralpy.structured.step_masks import StepMasks
from mistralpy.structured.token_mask import apply_bitmask

from . import machine

WORDS = [0, -1, 1, -(2**31), 0x55555555, 0x7FFFFFFF]  # none, all, the first, the last, every other, all but last


def random_bitmask(rng: random.Random, rows: int, words: int) -> torch.Tensor:
    values = [[rng.choice(WORDS) if rng.random() < 0.5 else rng.randrange(-(2**31), 2**31) for _ in range(words)]
              for _ in range(rows)]  # fmt: skip
    return torch.tensor(values, dtype=torch.int32).reshape(rows, words)


def reference(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    out = logits.clone()
    words = bitmask.shape[1]
    for i, row in enumerate(rows):
        for t in range(logits.shape[1]):
            allowed = t < 32 * words and (int(bitmask[i, t // 32]) & 0xFFFFFFFF) >> (t % 32) & 1
            if not allowed:
                out[row, t] = -math.inf
    return out


@pytest.fixture(params=["torch", "native"])
def kernel(request, native_kernels):
    if request.param == "torch":
        return None
    machine.require_native()
    return native_kernels.apply_token_bitmask


# vocabulary sizes not a multiple of 32, one that is, and masks narrower than the vocabulary (words < vocab / 32)
@pytest.mark.parametrize("vocab, words", [(1, 1), (31, 1), (33, 2), (100, 4), (128, 4), (1000, 32), (70, 2)])
def test_masks_equal_the_naive_reference(kernel, vocab, words):
    rng = random.Random(vocab * 7 + words)
    for num_rows, rows in [(3, [0, 1, 2]), (5, [4, 1]), (6, [])]:
        logits = torch.randn(num_rows, vocab)
        bitmask = random_bitmask(rng, len(rows), words)
        expected = reference(logits, bitmask, rows)
        apply_bitmask(logits, bitmask, rows, kernel)
        assert torch.equal(logits, expected)


def test_strided_rows_and_other_dtypes(kernel):
    rng = random.Random(5)
    base = torch.randn(4, 300)
    logits = base[:, 50:250]  # rows with a stride of 300
    bitmask = random_bitmask(rng, 2, 7)
    expected = reference(logits, bitmask, [3, 0])
    apply_bitmask(logits, bitmask, [3, 0], kernel)
    assert torch.equal(logits, expected) and torch.equal(base[:, :50], base[:, :50].clone())
    half = torch.randn(2, 40).bfloat16()  # the kernel takes float32 only: bf16 goes the torch way
    bitmask = random_bitmask(rng, 2, 2)
    expected = reference(half, bitmask, [0, 1])
    apply_bitmask(half, bitmask, [0, 1], kernel)
    assert torch.equal(half, expected)


def test_kernel_refuses_bad_arguments(native_kernels):
    machine.require_native()
    apply = native_kernels.apply_token_bitmask
    ok = torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="float32"):
        apply(torch.zeros(2, 64, dtype=torch.float64), ok, torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="outside the logits"):
        apply(torch.zeros(2, 64), ok, torch.tensor([0, 2]))
    with pytest.raises(RuntimeError, match="one per mask"):
        apply(torch.zeros(2, 64), ok, torch.tensor([0]))


def test_mask_count_must_match_rows():
    with pytest.raises(ValueError, match="2 masks for 1 rows"):
        apply_bitmask(torch.zeros(2, 32), torch.zeros(2, 1, dtype=torch.int32), [0])


def test_step_masks_split_by_chunk():
    masks = StepMasks([1, 8, 9, 20], torch.arange(4, dtype=torch.int32).unsqueeze(1))
    rows, bitmask = masks.within(8, 16)
    assert rows == [0, 1] and bitmask.squeeze(1).tolist() == [1, 2]
    rows, bitmask = masks.within(10, 18)
    assert rows == [] and bitmask.shape == (0, 1)
