"""A request's SamplingParams and, when it constrains its output, its grammar compiled, both in a worker thread.

llguidance validates a grammar when the StructuredOutputsParams is built and compiles it against the vocabulary
(milliseconds for a small schema, up to seconds for a large one, GIL released): on the event loop that would stall
every client, on the engine's thread every running request's decoding. Here the engine only copies the compiled
template (Engine.add_request's `grammar`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..sampling_params import SamplingParams
from .context import ServerContext
from .protocol import ChatCompletionRequest, CompletionRequest

if TYPE_CHECKING:
    import llguidance


Body = ChatCompletionRequest | CompletionRequest


async def sampling_params(ctx: ServerContext, body: Body) -> tuple[SamplingParams, llguidance.LLMatcher | None]:
    if not body.constrains_output:
        return body.to_sampling_params(ctx.generation_defaults), None
    return await asyncio.to_thread(_build, ctx, body)


def _build(ctx: ServerContext, body: Body) -> tuple[SamplingParams, llguidance.LLMatcher | None]:
    params = body.to_sampling_params(ctx.generation_defaults)
    spec = params.structured_outputs
    return params, ctx.engine.engine.grammar_compiler.template(spec) if spec is not None else None
