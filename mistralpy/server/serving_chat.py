"""Chat completions, request -> response: check the limits, render the chat template (in a worker thread), generate,
build OpenAI's response objects.

No HTTP here: `chat_completion` returns a ChatCompletionResponse, or (stream=True) a ChunkStream of
ChatCompletionChunks. The HTTP route (http_edge.py) and the in-process Runner both call it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..engine.async_engine import RequestStream
from ..outputs import CompletionOutput
from .context import ServerContext
from .logprobs import chat_logprobs
from .prompt_tokens import TokenizedPrompt, chat_prompt_ids
from .protocol import ChatCompletionRequest
from .responses import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessageOut,
    UsageInfo,
    now,
    random_id,
)
from .streaming import ChunkStream, add_streams, collect
from .structured_compile import sampling_params


async def chat_completion(
    ctx: ServerContext, body: ChatCompletionRequest
) -> ChatCompletionResponse | ChunkStream[ChatCompletionChunk]:
    """Validation errors are raised here, before any output; a stream's requests are already admitted."""
    ctx.check_model(body.model)
    ctx.limits.check_chat(body)
    params, grammar = await sampling_params(ctx, body)
    prompt = await chat_prompt_ids(ctx.engine.tokenizer, [m.to_template() for m in body.messages])
    ctx.limits.check_tokens([len(prompt)], params.n, "messages")
    request_id = random_id("chatcmpl")
    streams = await add_streams(ctx.engine, [TokenizedPrompt(prompt)], params, request_id, body.cache_salt, grammar)
    if body.stream:
        return ChunkStream(ChatChunks(ctx, body, request_id, len(prompt)).run(streams[0], params.n), streams)
    [result] = await collect(streams, params.n)
    choices = [
        ChatChoice(
            index=i,
            message=ChatMessageOut(content=c.text),
            logprobs=_logprobs(ctx, body, c.logprobs, c.token_ids),
            finish_reason=c.finish_reason,
        )
        for i, c in enumerate(result.choices)
    ]
    return ChatCompletionResponse(
        id=request_id,
        created=now(),
        model=ctx.model_name,
        choices=choices,
        usage=UsageInfo.of(
            len(result.prompt_token_ids), sum(len(c.token_ids) for c in result.choices), result.num_cached_tokens
        ),
    )


def _logprobs(ctx: ServerContext, body: ChatCompletionRequest, entries: Any, token_ids: list[int]) -> Any:
    if not body.logprobs:
        return None
    return ChatLogprobs(content=chat_logprobs(entries, token_ids, body.top_logprobs or 0, ctx.engine.tokenizer))


class ChatChunks:
    """OpenAI's chunk sequence: a role delta per choice, content deltas, a finish chunk per choice, then a usage
    chunk (choices: []) when stream_options.include_usage asks for one."""

    def __init__(self, ctx: ServerContext, body: ChatCompletionRequest, request_id: str, num_prompt: int) -> None:
        self.ctx, self.body, self.request_id, self.num_prompt = ctx, body, request_id, num_prompt
        self.created = now()
        self.num_generated = self.num_cached = 0

    def chunk(self, choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.request_id, created=self.created, model=self.ctx.model_name, choices=choices, usage=usage
        )

    def choice(
        self, index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None
    ) -> ChatCompletionChunk:
        return self.chunk([ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)])

    async def run(self, stream: RequestStream, n: int) -> AsyncIterator[ChatCompletionChunk]:
        try:
            for i in range(n):
                yield self.choice(i, {"role": "assistant", "content": ""})
            async for out in stream:
                self.num_cached = out.num_cached_tokens
                for c in out.outputs:
                    for piece in self.pieces(c):
                        yield piece
            if self.body.include_usage:
                yield self.chunk([], UsageInfo.of(self.num_prompt, self.num_generated, self.num_cached))
        finally:
            stream.abort()

    def pieces(self, c: CompletionOutput) -> list[ChatCompletionChunk]:
        self.num_generated += len(c.token_ids)
        logprobs = _logprobs(self.ctx, self.body, c.logprobs, c.token_ids) if c.token_ids else None
        out = []
        if c.text or logprobs is not None:
            out.append(self.choice(c.index, {"content": c.text}, logprobs))
        if c.finish_reason is not None:
            out.append(self.choice(c.index, {}, None, c.finish_reason))
        return out
