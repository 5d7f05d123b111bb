"""AsyncEngine in-process: delta outputs add up to the synchronous result; cancelling frees the KV blocks at once."""

from __future__ import annotations

import asyncio

import pytest

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine, EngineDeadError
from mistralpy.errors import PromptTooLongError
from mistralpy.llm import LLM
from mistralpy.sampling_params import SamplingParams

PARAMS = SamplingParams(n=2, temperature=1.0, seed=5, max_tokens=12, logprobs=2, ignore_eos=True)


@pytest.fixture(scope="module")
def gguf(tiny_llama):
    return str(tiny_llama[2])


def test_deltas_add_up_to_the_synchronous_result(gguf):
    expected = LLM(gguf, dtype="float32").generate("Hello there", PARAMS)[0]

    async def run() -> tuple[list[str], list[list[int]], list[int]]:
        engine = AsyncEngine.from_config(EngineConfig(model=gguf, dtype="float32"))
        texts, ids, num_logprobs = ["", ""], [[], []], [0, 0]
        async for out in engine.generate("Hello there", PARAMS, "r1"):
            for c in out.outputs:
                texts[c.index] += c.text
                ids[c.index] += c.token_ids
                num_logprobs[c.index] += len(c.logprobs)
        await engine.shutdown()
        return texts, ids, num_logprobs

    texts, ids, num_logprobs = asyncio.run(run())
    assert texts == [c.text for c in expected.outputs]
    assert ids == [c.token_ids for c in expected.outputs]
    assert num_logprobs == [12, 12]


def test_cancel_aborts_and_frees_blocks_and_errors_surface(gguf):
    async def run() -> None:
        engine = AsyncEngine.from_config(EngineConfig(model=gguf, dtype="float32"))
        total = engine.engine.block_manager.num_blocks
        params = SamplingParams(max_tokens=400, ignore_eos=True)
        started = asyncio.Event()

        async def consume(i: int) -> None:
            async for _ in engine.generate("Hello", params, f"c{i}"):
                started.set()

        tasks = [asyncio.create_task(consume(i)) for i in range(3)]
        await started.wait()
        assert await engine.call(lambda e: e.block_manager.num_free_blocks) < total
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # the aborts were queued before this read, so the loop thread has already run them
        assert await engine.call(lambda e: (e.block_manager.num_free_blocks, e.has_unfinished_requests())) == (
            total,
            False,
        )
        assert engine.finished_counts["abort"] == 3
        with pytest.raises(PromptTooLongError, match="max_tokens"):
            await engine.add_request("Hello", SamplingParams(max_tokens=400 + engine.max_model_len))
        await engine.shutdown()
        with pytest.raises(EngineDeadError):
            await engine.add_request("Hello", params)

    asyncio.run(run())


def test_engine_step_deltas_hold_only_what_is_new(gguf):
    """Engine.step(delta=True) itself: text, token ids and logprobs of each delta are new ones only (they add up to
    the whole output), a child's finish comes once, and the prompt's logprobs come on the first output only."""
    params = SamplingParams(n=2, temperature=1.0, seed=5, max_tokens=12, logprobs=2, prompt_logprobs=1)
    expected = LLM(gguf, dtype="float32").generate("Hello there", params)[0]
    engine = LLM(gguf, dtype="float32").engine
    rid = engine.add_request("Hello there", params)
    texts, ids, logprobs, finishes, prompt_logprobs = ["", ""], [[], []], [[], []], [0, 0], []
    while engine.has_unfinished_requests():
        for out in engine.step(delta=True):
            assert out.request_id == rid
            prompt_logprobs.append(out.prompt_logprobs)
            for c in out.outputs:
                texts[c.index] += c.text
                ids[c.index] += c.token_ids
                logprobs[c.index] += c.logprobs
                finishes[c.index] += c.finish_reason is not None
    assert texts == [c.text for c in expected.outputs]
    assert ids == [c.token_ids for c in expected.outputs]
    assert logprobs == [c.logprobs for c in expected.outputs]
    assert finishes == [1, 1]
    assert prompt_logprobs[0] == expected.prompt_logprobs and prompt_logprobs[1:] == [None] * (len(prompt_logprobs) - 1)
