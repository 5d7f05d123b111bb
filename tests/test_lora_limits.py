"""The loaded adapters' total rank (max_lora_total_rank): idle adapters unloaded least recently used first to make
room, a clear error when the adapters of unfinished requests leave none, and the limit's own checks."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM
from mistralpy.errors import InvalidRequestError, LoRAAdapterError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.lora import LoRARequest
from mistralpy.lora.cli import lora_merge_option
from mistralpy.lora.manager import LoRAManager

from .lora_adapters import make_adapter


@pytest.fixture(scope="module")
def adapters(tiny_llama, tmp_path_factory):
    """Three rank-4 adapters and one of rank 8, by id."""
    root = tmp_path_factory.mktemp("limits")
    ranks = {1: 4, 2: 4, 3: 4, 4: 8}
    for i, r in ranks.items():
        make_adapter(tiny_llama[0], root / f"a{i}", seed=i, r=r)
    return {i: LoRARequest(f"a{i}", i, str(root / f"a{i}")) for i in ranks}


def _manager(tiny_llama, **limits) -> LoRAManager:
    model = load_model(open_model_source(tiny_llama[1]), torch.float32)
    return LoRAManager(model, dtype=torch.float32, **limits)


def test_total_rank_evicts_idle_adapters_lru(tiny_llama, adapters):
    manager = _manager(tiny_llama, max_loras=3, max_lora_rank=8, max_total_rank=8)
    s1 = manager.acquire(adapters[1], set())
    s2 = manager.acquire(adapters[2], set())
    manager.acquire(adapters[1], set())  # used again: adapter 2 is now the least recently used
    assert manager.total_rank() == 8 and None in manager.slots  # a slot is free, but the rank budget is spent
    s3 = manager.acquire(adapters[3], busy=set())
    assert manager.slot_of(2) is None and manager.slot_of(1) == s1 and s3 == s2
    assert manager.total_rank() == 8
    ranks = [(layer.ranks[s1], layer.ranks[s2]) for layer in manager.layers.values()]
    assert all(a == b > 0 for a, b in ranks)  # the slot holds adapter 3's weights: rank 4 per part, as adapter 1
    s4 = manager.acquire(adapters[4], busy=set())  # rank 8 needs both idle adapters gone
    assert [r.lora_int_id for r in manager.loaded()] == [4] and manager.total_rank() == 8
    assert all(layer.ranks[s] == 0 for layer in manager.layers.values() for s in range(3) if s != s4)


def test_no_room_while_adapters_are_busy(tiny_llama, adapters):
    manager = _manager(tiny_llama, max_loras=3, max_lora_rank=8, max_total_rank=8)
    s1, s2 = manager.acquire(adapters[1], set()), manager.acquire(adapters[2], set())
    with pytest.raises(InvalidRequestError, match="total rank of 8 of max_lora_total_rank 8"):
        manager.acquire(adapters[3], busy={s1, s2})
    assert [r.lora_int_id for r in manager.loaded()] == [1, 2]  # nothing was unloaded for the refused one
    manager.acquire(adapters[3], busy={s2})  # adapter 1 idle: it makes room
    assert sorted(r.lora_int_id for r in manager.loaded()) == [2, 3]


def test_adapter_over_the_total_rank(tiny_llama, adapters):
    manager = _manager(tiny_llama, max_loras=2, max_lora_rank=8, max_total_rank=6)
    with pytest.raises(LoRAAdapterError, match="rank 8 exceeds max_lora_total_rank 6"):
        manager.acquire(adapters[4], set())
    assert manager.loaded() == []


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "8"])
def test_bad_total_rank(tiny_llama, value):
    with pytest.raises(InvalidRequestError, match="max_lora_total_rank must be a positive integer or None"):
        LLM(str(tiny_llama[1]), enable_lora=True, max_lora_total_rank=value)


def test_engine_keeps_serving_after_a_refused_adapter(tiny_llama, adapters):
    from mistralpy import SamplingParams

    llm = LLM(str(tiny_llama[1]), dtype="float32", enable_lora=True, max_loras=2, max_lora_rank=8,
              max_lora_total_rank=4)  # fmt: skip
    params = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)
    with pytest.raises(LoRAAdapterError, match="max_lora_total_rank 4"):
        llm.generate(["hello"], params, lora_request=adapters[4])
    with pytest.raises(InvalidRequestError, match="total rank of 4 of max_lora_total_rank 4"):
        llm.generate(["hello", "hello"], params, lora_request=[adapters[1], adapters[2]])  # both at once: no room
    for i in (1, 2):  # one after the other: the idle one makes room
        out = llm.generate(["hello"], params, lora_request=adapters[i])
        assert len(out[0].outputs[0].token_ids) == 2


def test_lora_merge_flag_values():
    from types import SimpleNamespace

    args = SimpleNamespace(lora_merge=["a", "b=0.5", "c=d", "e=-2"])
    assert lora_merge_option(args) == [("a", 1.0), ("b", 0.5), ("c=d", 1.0), ("e", -2.0)]
