"""The native lora_add (kernels/lora_delta.cpp) against a float64 reference written here: each token's delta by its
own slot and that slot's spans (a fused projection's parts: their own ranks and output columns), rows without an
adapter untouched, every row the same in any batch."""

from __future__ import annotations

import pytest
import torch

from . import machine

IN, OUT, ROOM, SLOTS = 96, 600, 24, 3  # a room that is not a multiple of 16, parts not multiples of 32 columns
# per slot, up to 2 parts of [k0, k1, c0, c1]: ranks k0 .. k1 into output columns c0 .. c1 ([0, 0, 0, 0]: none)
SPANS = torch.tensor(
    [
        [[0, 10, 0, 400], [10, 24, 400, 600]],  # two parts, the second one rank 14
        [[0, 5, 0, 600], [0, 0, 0, 0]],  # one part of rank 5
        [[0, 0, 0, 0], [0, 0, 0, 0]],  # an adapter that does not target this projection
    ]
)


@pytest.fixture
def native(native_kernels):
    machine.require_native()
    return native_kernels


def _inputs(tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, IN, generator=g).bfloat16()
    y = torch.randn(tokens, OUT, generator=g).bfloat16()
    a = (torch.randn(SLOTS, IN, ROOM, generator=g) * 0.2).bfloat16()
    b = (torch.randn(SLOTS, ROOM, OUT, generator=g) * 0.2).bfloat16()
    return x, y, a, b


def _reference(x, y, a, b, spans, slots) -> torch.Tensor:
    """float64 sums of the bf16 operands, one rounding to bf16 at the end."""
    out = y.double().clone()
    for t, s in enumerate(slots.tolist()):
        for k0, k1, c0, c1 in spans[s].tolist() if s >= 0 else []:
            out[t, c0:c1] += x[t].double() @ a[s, :, k0:k1].double() @ b[s, k0:k1, c0:c1].double()
    return out.bfloat16()


def test_each_token_by_its_slot_and_spans(native):
    x, y, a, b = _inputs(11)
    slots = torch.tensor([0, 1, -1, 0, 0, 1, 2, 0, 0, 0, -1])  # 6 tokens of slot 0: more than one block of 4
    expected = _reference(x, y, a, b, SPANS, slots)
    got = y.clone()
    native.lora_add(got, x, a, b, SPANS, slots)
    assert torch.equal(got[slots < 0], y[slots < 0]) and torch.equal(got[6], y[6])
    steps = (got.float() - expected.float()).abs() / expected.float().abs().clamp_min(2**-20)
    assert (got != expected).float().mean() < 0.02 and steps.max() <= 2**-7  # at most one bf16 step, rarely


def test_a_row_is_the_same_in_any_batch(native):
    x, y, a, b = _inputs(9, seed=1)
    spans = torch.tensor([[[0, 8, 0, 600]], [[0, 24, 0, 600]], [[0, 16, 64, 600]]])
    slots = torch.tensor([2, 0, 1, 1, -1, 0, 2, 2, 1])
    batch = y.clone()
    native.lora_add(batch, x, a, b, spans, slots)
    for t in range(len(slots)):
        alone = y[t : t + 1].clone()
        native.lora_add(alone, x[t : t + 1], a, b, spans, slots[t : t + 1])
        assert torch.equal(alone[0], batch[t])


def test_bad_arguments_are_clear_errors(native):
    x, y, a, b = _inputs(2)
    two = torch.tensor([0, 1])
    with pytest.raises(RuntimeError, match="slot out of range"):
        native.lora_add(y, x, a, b, SPANS, torch.tensor([0, 3]))
    for bad in ([0, 25, 0, 600], [0, 4, 0, 601], [5, 4, 0, 10]):  # past the room, past the columns, backwards
        spans = SPANS.clone()
        spans[1, 1] = torch.tensor(bad)
        with pytest.raises(RuntimeError, match="span out of range"):
            native.lora_add(y, x, a, b, spans, two)
    with pytest.raises(RuntimeError, match="must be bf16"):
        native.lora_add(y.float(), x, a, b, SPANS, two)
    with pytest.raises(RuntimeError, match="shapes do not match"):
        native.lora_add(y, x, a, b[:, :, :10].contiguous(), SPANS, two)
    with pytest.raises(RuntimeError, match="spans"):
        native.lora_add(y, x, a, b, SPANS[:, :, :3].contiguous(), two)
