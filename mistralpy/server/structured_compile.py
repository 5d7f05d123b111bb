"""A request's SamplingParams and, when it constrains its output, its grammar compiled, both in a worker thread.

llguidance validates a grammar when the StructuredOutputsParams is built and compiles it against the vocabulary
(milliseconds for a small schema, up to seconds for a large one, GIL released): on the event loop that would stall
every client, on the engine's thread every running request's decoding. Here the engine only copies the compiled
template (Engine.add_request's `grammar`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sampling_params import SamplingParams
from .context import ServerContext
from .protocol import ChatCompletionRequest, CompletionRequest

if TYPE_CHECKING:
    import llguidance


Body = ChatCompletionRequest | CompletionRequest


Adjust = Callable[[SamplingParams], SamplingParams]


async def sampling_params(
    ctx: ServerContext, body: Body, adjust: Adjust | None = None, off_loop: bool = False
) -> tuple[SamplingParams, llguidance.LLMatcher | None]:
    """`adjust`: what the request's params become before compiling (a chat's tool-call grammar); `off_loop`: whether
    it may constrain the output, so that it too runs in the worker thread."""
    if not body.constrains_output and not off_loop:
        params = body.to_sampling_params(ctx.generation_defaults)
        params = adjust(params) if adjust is not None else params
        if params.structured_outputs is None:
            return params, None
    return await asyncio.to_thread(_build, ctx, body, adjust)


def _build(ctx: ServerContext, body: Body, adjust: Adjust | None) -> tuple[SamplingParams, llguidance.LLMatcher | None]:
    params = body.to_sampling_params(ctx.generation_defaults)
    if adjust is not None:
        params = adjust(params)
    spec = params.structured_outputs
    return params, ctx.engine.engine.grammar_compiler.template(spec) if spec is not None else None
