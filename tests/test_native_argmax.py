"""The native greedy argmax (kernels/argmax.cpp) against torch.argmax(dim=1), its oracle: the first of equal maxima,
a row's first NaN where it holds one, any row length (vector tails) and row stride; bad input is a clear error."""

from __future__ import annotations

import pytest
import torch

from mistralpy.engine.sampler import Sampler

from . import machine

VOCAB = 49152 + 13  # not a multiple of the kernel's 8 or 16 lanes


@pytest.fixture
def argmax(native_kernels):
    machine.require_native()
    return native_kernels.argmax_rows


def assert_matches_torch(argmax, logits: torch.Tensor) -> None:
    got = argmax(logits)
    assert got.dtype == torch.int64 and torch.equal(got, logits.argmax(dim=1))


def test_random_rows_of_every_tail_length(argmax):
    torch.manual_seed(0)
    for n in [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, VOCAB]:
        assert_matches_torch(argmax, torch.randn(5, n))


def test_ties_infinities_and_nan(argmax):
    rows = torch.randn(8, VOCAB)
    rows[0, [40, 7000, 40000]] = 9.0  # equal maxima: the first
    rows[1].fill_(-float("inf"))  # all -inf: index 0
    rows[2, [3, 9]] = float("inf")
    rows[3, [5000, 17]] = float("nan")  # a NaN wins, the first one
    rows[4, -1] = float("nan")  # in the last vector's tail
    rows[5].fill_(0.0)
    rows[6, 1] = float("nan")
    rows[6, 2] = float("inf")
    rows[7, -3:] = 50.0  # the maximum in the tail only
    assert_matches_torch(argmax, rows)
    assert argmax(rows).tolist()[:5] == [40, 0, 3, 17, VOCAB - 1]  # the cases spelled out


def test_strided_rows_and_empty_batches(argmax):
    wide = torch.randn(6, VOCAB + 40)
    assert_matches_torch(argmax, wide[:, 40:])  # rows with a stride, as the sampler's chunks of rows are
    assert_matches_torch(argmax, wide[::2, :1000])
    assert argmax(torch.empty(0, 10)).shape == (0,)


def test_bad_input_is_a_clear_error(argmax):
    with pytest.raises(RuntimeError, match="float32 with contiguous rows"):
        argmax(torch.randn(4, 10).bfloat16())
    with pytest.raises(RuntimeError, match="float32 with contiguous rows"):
        argmax(torch.randn(10, 4).t())
    with pytest.raises(RuntimeError, match="must not be empty"):
        argmax(torch.empty(3, 0))


def test_the_sampler_takes_greedy_rows_through_the_kernel(native_kernels):
    """Greedy rows come from the kernel where the sampler was given it, the same tokens as torch's argmax."""
    from mistralpy import SamplingParams

    from .test_sampler import make_request

    machine.require_native()
    calls = []

    def counted(logits):
        calls.append(logits.shape)
        return native_kernels.argmax_rows(logits)

    torch.manual_seed(1)
    logits = torch.randn(3, 1000)
    expected = logits.argmax(dim=1).tolist()
    requests = [make_request(SamplingParams(temperature=0)) for _ in range(3)]
    assert Sampler(None, counted).sample(logits.clone(), requests).token_ids == expected
    assert calls == [(3, 1000)]
