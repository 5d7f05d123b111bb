"""What an engine serves: "generate" (text) or "embed" (embedding vectors), and the request an embedding is."""

from __future__ import annotations

from ..errors import InvalidRequestError
from ..sampling_params import SamplingParams
from .pooling import PoolingParams

TASKS = ("generate", "embed")
# The per-step token budget when none is given. Generation keeps steps small, so that decoding requests wait little
# for a long prompt's prefill; embedding requests are prefill only, and fewer, larger steps cost less per text
# (measured: 256 mixed texts on all-MiniLM-L6-v2, 2 threads, 4.9 texts/s at 512 tokens a step, 21.3 at 16384).
STEP_TOKENS = {"generate": 512, "embed": 16384}
# An embedding request samples nothing; Request still carries SamplingParams, read only on paths it never takes.
NO_SAMPLING = SamplingParams()


def resolve_task(task: str | None, is_encoder: bool, pooling: str | None) -> str:
    """None: "embed" for an encoder model (it cannot generate), else "generate"."""
    if task is not None and task not in TASKS:
        raise InvalidRequestError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    resolved = task or ("embed" if is_encoder else "generate")
    if resolved == "generate" and is_encoder:
        raise InvalidRequestError("this model is an encoder: it makes embeddings and cannot generate; use task 'embed'")
    if pooling is not None and resolved != "embed":
        raise InvalidRequestError(f"pooling {pooling!r} applies to embeddings only: use it with task 'embed'")
    if pooling is not None:
        PoolingParams(pooling)  # a clear error for an unknown mode
    return resolved
