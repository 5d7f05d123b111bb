"""Scheduler and block manager with a fake runner: no tensors, just token counts and block ids."""

from __future__ import annotations

import random

import pytest

from mistralpy.config import SchedulerConfig
from mistralpy.engine.block_manager import BlockManager
from mistralpy.engine.request import Request, RequestStatus
from mistralpy.engine.scheduler import Scheduler, SchedulerOutput
from mistralpy.sampling_params import SamplingParams


def make(num_blocks=64, block_size=4, budget=32, max_seqs=8, max_len=256, prefix=True) -> Scheduler:
    return Scheduler(SchedulerConfig(max_seqs, budget, max_len), BlockManager(num_blocks, block_size, prefix))


def req(rid: str, prompt: list[int], max_tokens: int = 8, **kw) -> Request:
    return Request(rid, prompt, SamplingParams(max_tokens=max_tokens, **kw), frozenset({0}))


def fake_step(s: Scheduler, token=lambda r: 7) -> SchedulerOutput:
    """Schedule, check the invariants a runner relies on, 'sample' a token for requests that caught up."""
    out = s.schedule()
    assert out.num_tokens <= s.config.max_num_batched_tokens
    bs = s.block_manager.block_size
    for item in out.scheduled:
        r = item.request
        assert item.num_new_tokens >= 1 and item.start == r.num_computed_tokens
        assert len(r.block_ids) * bs >= item.start + item.num_new_tokens  # room for every new token
        assert len(set(r.block_ids)) == len(r.block_ids)
    s.update_from_output(out, {i.request.request_id: token(i.request) for i in out.scheduled if i.samples})
    return out


def run_all(s: Scheduler, limit: int = 10_000) -> int:
    steps = 0
    while s.has_unfinished():
        fake_step(s)
        steps += 1
        assert steps < limit
    return steps


def assert_no_leak(s: Scheduler) -> None:
    bm = s.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    assert all(b.ref_count == 0 for b in bm.blocks)


def test_chunked_prefill_respects_budget_and_decodes_continue():
    s = make(budget=16)
    s.add_request(req("short", [1, 2, 3], max_tokens=20))
    fake_step(s)  # "short" prefilled, sampled its first token
    s.add_request(req("long", list(range(1, 60)), max_tokens=2))
    out = fake_step(s)
    counts = {i.request.request_id: i.num_new_tokens for i in out.scheduled}
    assert counts == {"short": 1, "long": 15}  # the long prompt is chunked while "short" keeps decoding
    assert not any(i.samples for i in out.scheduled if i.request.request_id == "long")
    run_all(s)
    assert_no_leak(s)


def test_new_requests_join_running_batch():
    s = make()
    s.add_request(req("a", [1, 2], max_tokens=10))
    fake_step(s)
    s.add_request(req("b", [3, 4], max_tokens=10))
    out = fake_step(s)
    assert {i.request.request_id for i in out.scheduled} == {"a", "b"}
    assert s.stats.max_batch_size == 2
    run_all(s)
    assert_no_leak(s)


def test_max_num_seqs_limits_running():
    s = make(max_seqs=3)
    for i in range(6):
        s.add_request(req(str(i), [1, 2, 3]))
    fake_step(s)
    assert len(s.running) == 3 and len(s.waiting) == 3
    run_all(s)
    assert_no_leak(s)


def test_finish_reasons_and_blocks_freed():
    s = make()
    a, b, c = req("a", [1, 2], max_tokens=3), req("b", [1, 2], max_tokens=5, stop_token_ids=[9]), req("c", [5])
    for r in (a, b, c):
        s.add_request(r)
    fake_step(s, token=lambda r: 9 if r.request_id == "b" else 0 if r.request_id == "c" else 7)
    assert b.status == RequestStatus.FINISHED_STOPPED and b.stop_reason == 9 and b.block_ids == []
    assert c.status == RequestStatus.FINISHED_STOPPED  # eos (0)
    run_all(s)
    assert a.status == RequestStatus.FINISHED_LENGTH and len(a.output_token_ids) == 3
    assert_no_leak(s)


def test_min_tokens_and_ignore_eos():
    s = make()
    a = req("a", [1], max_tokens=4, min_tokens=3)
    b = req("b", [1], max_tokens=4, ignore_eos=True)
    s.add_request(a)
    s.add_request(b)
    while s.has_unfinished():
        fake_step(s, token=lambda r: 0)
    assert len(a.output_token_ids) == 3 and a.finish_reason == "stop"
    assert len(b.output_token_ids) == 4 and b.finish_reason == "length"
    assert_no_leak(s)


def test_abort_frees_blocks_waiting_and_running():
    s = make(max_seqs=1)
    s.add_request(req("run", list(range(1, 30)), max_tokens=50))
    s.add_request(req("wait", [1, 2, 3]))
    fake_step(s)
    assert s.block_manager.num_free_blocks < s.block_manager.num_blocks
    assert s.abort_request("run") and s.abort_request("wait")
    assert not s.abort_request("unknown")
    assert not s.has_unfinished()
    assert_no_leak(s)


def test_preemption_when_blocks_run_out_then_everything_finishes():
    s = make(num_blocks=12, block_size=4, budget=64, max_seqs=8)
    reqs = [req(str(i), list(range(1, 9)), max_tokens=12) for i in range(4)]
    for r in reqs:
        s.add_request(r)
    run_all(s)
    assert s.stats.num_preemptions > 0
    assert all(len(r.output_token_ids) == 12 and r.finish_reason == "length" for r in reqs)
    assert sum(r.num_preemptions for r in reqs) == s.stats.num_preemptions
    assert_no_leak(s)


def test_prefix_cache_hit_skips_computed_blocks():
    s = make(block_size=4)
    prompt = list(range(1, 23))  # 22 tokens: 5 full blocks
    first = req("first", prompt, max_tokens=2)
    s.add_request(first)
    run_all(s)
    second = req("second", prompt + [99], max_tokens=2)
    s.add_request(second)
    out = fake_step(s)
    assert second.num_cached_tokens == 20
    assert out.scheduled[0].start == 20 and out.scheduled[0].num_new_tokens == 3
    assert s.block_manager.stats.hits == 20
    run_all(s)
    assert_no_leak(s)


def test_whole_prompt_cached_still_computes_last_token():
    s = make(block_size=4)
    s.add_request(req("a", list(range(1, 9)), max_tokens=1))
    run_all(s)
    b = req("b", list(range(1, 9)), max_tokens=1)
    s.add_request(b)
    out = fake_step(s)
    assert b.num_cached_tokens == 4 and out.scheduled[0].num_new_tokens == 4
    assert_no_leak(s)


def test_shared_prefix_blocks_are_refcounted():
    s = make(block_size=4, budget=64)
    prompt = list(range(1, 14))
    a = req("a", prompt, max_tokens=30)
    s.add_request(a)
    fake_step(s)
    b = req("b", prompt, max_tokens=30)
    s.add_request(b)
    fake_step(s)
    shared = set(a.block_ids) & set(b.block_ids)
    assert len(shared) == 3
    assert all(s.block_manager.blocks[i].ref_count == 2 for i in shared)
    s.abort_request("a")
    assert all(s.block_manager.blocks[i].ref_count == 1 for i in shared)
    run_all(s)
    assert_no_leak(s)


def test_eviction_reuses_cached_free_blocks_lru():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = req("a", [1, 2, 3, 4, 5])
    assert bm.allocate_slots(a, 5)
    bm.free(a)
    assert len(bm.hash_to_block) == 2  # two full blocks stay findable while free
    b = req("b", [9, 9, 9, 9, 9, 9, 9, 9])
    assert bm.allocate_slots(b, 8)  # needs every block: the cached ones are evicted
    assert bm.num_free_blocks == 0
    assert all(
        bm.blocks[i].block_hash is None or bm.hash_to_block.get(bm.blocks[i].block_hash) == i for i in b.block_ids
    )
    assert not bm.allocate_slots(req("c", [1]), 1)
    bm.free(b)
    assert bm.num_free_blocks == 4


def test_without_idle_room_freed_blocks_are_reused_before_unused_ones():
    """The pool's memory is taken as blocks are first written: with no room for idle cached blocks, a second burst
    as large as the first stays within the first's blocks, evicting its cached prefixes (least recently freed first)
    rather than touching new blocks."""
    bm = BlockManager(num_blocks=64, block_size=4, idle_tokens=0)
    first = [req(f"a{i}", [i] * 10) for i in range(4)]  # 3 blocks each
    for r in first:
        assert bm.allocate_slots(r, 10)
    used = {b for r in first for b in r.block_ids}
    assert used == set(range(12)) and bm.num_free_blocks == 52
    for r in first:
        bm.free(r)
    second = [req(f"b{i}", [100 + i] * 10) for i in range(4)]
    for r in second:
        assert bm.allocate_slots(r, 10)
    assert {b for r in second for b in r.block_ids} == used
    assert bm.get_computed_blocks(req("again", [0] * 10)) == []  # the first burst's prefixes were evicted
    assert not any(bm.blocks[b].ref_count for b in range(12, 64))
    third = req("c", [7] * 10)
    assert bm.allocate_slots(third, 10) and third.block_ids == [12, 13, 14]  # no freed block left: unused ones


def test_freed_blocks_stay_cached_up_to_the_idle_room():
    """Room for 16 idle blocks: while fewer wait, new requests take unused blocks and finished prompts stay cached;
    past it the least recently freed block is reused (its prefix evicted)."""
    bm = BlockManager(num_blocks=64, block_size=4, idle_tokens=64)
    first = [req(f"a{i}", [i] * 10) for i in range(4)]  # 3 blocks each: 2 full (cached) + 1 partial
    for r in first:
        assert bm.allocate_slots(r, 10)
        bm.free(r)  # one at a time: each finds the earlier ones' blocks freed
    assert sorted(bm.free_ids) == list(range(12))  # never reused: 12 idle blocks < 16
    for i in range(4):
        assert bm.get_computed_blocks(req("again", [i] * 9 + [50])) == [3 * i, 3 * i + 1]  # each prefix cached
    second = [req(f"b{i}", [100 + i] * 10) for i in range(2)]
    for r in second:
        assert bm.allocate_slots(r, 10)
        bm.free(r)
    assert len(bm.free_ids) == 18 and bm.num_unused == 46
    third = req("c", [7] * 10)  # 18 idle >= 16: the least recently freed go (a0's: partial, then its two full)
    assert bm.allocate_slots(third, 10) and third.block_ids == [2, 1, 0]
    assert bm.get_computed_blocks(req("again", [0] * 10)) == []
    assert bm.get_computed_blocks(req("again", [1] * 10)) == [3, 4]
    assert BlockManager(num_blocks=64, block_size=4).max_idle_blocks == 16  # default: a quarter of the pool
    assert BlockManager(num_blocks=64, block_size=4, enable_prefix_caching=False).max_idle_blocks == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_workload_no_leak(seed):
    rng = random.Random(seed)
    s = make(num_blocks=40, block_size=4, budget=24, max_seqs=6)
    live = []
    for step in range(300):
        if rng.random() < 0.3:
            r = req(f"{step}", [rng.randrange(1, 50) for _ in range(rng.randrange(1, 40))], rng.randrange(1, 20))
            s.add_request(r)
            live.append(r.request_id)
        if live and rng.random() < 0.05:
            s.abort_request(live.pop(rng.randrange(len(live))))
        if s.has_unfinished():
            fake_step(s, token=lambda r: rng.randrange(1, 50))
    run_all(s)
    assert_no_leak(s)
