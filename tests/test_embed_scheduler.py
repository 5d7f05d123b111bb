"""Embedding requests in the scheduler (no tensors): prefill only, scheduled whole (never chunked, no prefix hits),
finished with their blocks freed in the step that computes them, batched with generation."""

from __future__ import annotations

from mistralpy.config import SchedulerConfig
from mistralpy.embed.pooling import PoolingParams
from mistralpy.embed.task import NO_SAMPLING
from mistralpy.engine.block_manager import BlockManager
from mistralpy.engine.request import Request, RequestStatus
from mistralpy.engine.scheduler import Scheduler
from mistralpy.sampling_params import SamplingParams


def make(budget: int = 16) -> Scheduler:
    return Scheduler(SchedulerConfig(8, budget, 256), BlockManager(64, 4, True))


def embed_req(rid: str, n: int) -> Request:
    return Request(rid, list(range(1, n + 1)), NO_SAMPLING, pooling=PoolingParams("mean"))


def step(s: Scheduler) -> dict[str, int]:
    out = s.schedule()
    s.update_from_output(out, {i.request.request_id: 5 for i in out.scheduled if i.samples and not i.request.pooling})
    return {i.request.request_id: i.num_new_tokens for i in out.scheduled}


def test_whole_prompts_batched_and_freed():
    s = make(budget=16)
    reqs = [embed_req("a", 5), embed_req("b", 6), embed_req("c", 7)]
    for r in reqs:
        s.add_request(r)
    assert step(s) == {"a": 5, "b": 6}  # "c" does not fit the rest of the budget whole: it waits, unchunked
    assert step(s) == {"c": 7}
    assert all(r.status == RequestStatus.FINISHED_STOPPED and not r.block_ids for r in reqs)
    assert s.block_manager.num_free_blocks == 64 and not s.has_unfinished()


def test_over_budget_prompt_runs_alone_and_takes_no_prefix_hit():
    s = make(budget=16)
    s.add_request(embed_req("long", 40))
    assert step(s) == {"long": 40}
    s.add_request(embed_req("again", 40))  # the same tokens: their blocks are cached, yet all are computed
    assert step(s) == {"again": 40}


def test_shares_steps_with_generation():
    s = make(budget=16)
    gen = Request("gen", [1, 2, 3], SamplingParams(max_tokens=4), frozenset())
    s.add_request(gen)
    step(s)
    s.add_request(embed_req("e", 8))
    assert step(s) == {"gen": 1, "e": 8}
    assert gen.output_token_ids == [5, 5] and s.requests.keys() == {"gen"}
