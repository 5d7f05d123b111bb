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
