"""The per-step token budget's default follows the task: 512 for generation (decoding requests wait little for a
prefill), 16384 for embeddings (prefill only: fewer, larger steps); an explicit budget always wins."""

from __future__ import annotations

import pytest

from mistralpy import LLM
from mistralpy.config import EngineConfig
from mistralpy.embed.default_model import default_embedding_model_path
from mistralpy.errors import InvalidRequestError


def test_the_default_budget_follows_the_task(tiny_llama):
    assert LLM(str(tiny_llama[2]), dtype="float32").engine.scheduler_config.max_num_batched_tokens == 512
    embed = LLM(default_embedding_model_path(), task="embed")
    assert embed.engine.scheduler_config.max_num_batched_tokens == 16384
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(40)]
    embed.embed(texts)
    assert embed.engine.scheduler.stats.max_batch_size == 40  # every text in one step
    given = LLM(default_embedding_model_path(), task="embed", max_num_batched_tokens=64)
    assert given.engine.scheduler_config.max_num_batched_tokens == 64


def test_a_bad_budget_is_refused():
    with pytest.raises(InvalidRequestError, match="max_num_batched_tokens must be a positive integer or None"):
        EngineConfig(max_num_batched_tokens=0)
