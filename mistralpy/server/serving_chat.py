"""POST /v1/chat/completions: render the chat template, generate, answer as JSON or as OpenAI's SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from ..engine.async_engine import RequestStream
from ..outputs import CompletionOutput
from .context import ServerContext
from .logprobs import chat_logprobs
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
from .streaming import DONE, SSEResponse, abort_all, add_streams, collect, sse, sse_error, until_disconnect


async def create_chat_completion(ctx: ServerContext, body: ChatCompletionRequest, raw: Request) -> Response:
    ctx.check_model(body.model)
    params = body.to_sampling_params(ctx.generation_defaults)
    messages = [m.to_template() for m in body.messages]
    prompt = ctx.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    request_id = random_id("chatcmpl")
    streams = await add_streams(ctx.engine, [prompt], params, request_id)
    if body.stream:
        chunks = ChatStream(ctx, body, request_id, len(prompt)).run(streams[0], params.n)
        return SSEResponse(chunks, on_close=lambda: abort_all(streams))
    try:
        [result] = await until_disconnect(raw, collect(streams, params.n))
    finally:
        abort_all(streams)
    choices = [
        ChatChoice(
            index=i,
            message=ChatMessageOut(content=c.text),
            logprobs=_logprobs(ctx, body, c.logprobs, c.token_ids),
            finish_reason=c.finish_reason,
        )
        for i, c in enumerate(result.choices)
    ]
    response = ChatCompletionResponse(
        id=request_id,
        created=now(),
        model=ctx.model_name,
        choices=choices,
        usage=UsageInfo.of(len(result.prompt_token_ids), sum(len(c.token_ids) for c in result.choices)),
    )
    return JSONResponse(response.model_dump())


def _logprobs(ctx: ServerContext, body: ChatCompletionRequest, entries: Any, token_ids: list[int]) -> Any:
    if not body.logprobs:
        return None
    return ChatLogprobs(content=chat_logprobs(entries, token_ids, body.top_logprobs or 0, ctx.engine.tokenizer))


class ChatStream:
    """OpenAI's chunk sequence: a role delta per choice, content deltas, a finish chunk per choice, an optional
    usage chunk (choices: []), then [DONE]."""

    def __init__(self, ctx: ServerContext, body: ChatCompletionRequest, request_id: str, num_prompt: int) -> None:
        self.ctx, self.body, self.request_id, self.num_prompt = ctx, body, request_id, num_prompt
        self.created = now()
        self.num_generated = 0

    def chunk(self, choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> str:
        return sse(
            ChatCompletionChunk(
                id=self.request_id, created=self.created, model=self.ctx.model_name, choices=choices, usage=usage
            ),
            with_usage=self.body.include_usage,
        )

    def choice(self, index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> str:
        return self.chunk([ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)])

    async def run(self, stream: RequestStream, n: int) -> AsyncIterator[str]:
        try:
            for i in range(n):
                yield self.choice(i, {"role": "assistant", "content": ""})
            async for out in stream:
                for c in out.outputs:
                    for piece in self.pieces(c):
                        yield piece
            if self.body.include_usage:
                yield self.chunk([], UsageInfo.of(self.num_prompt, self.num_generated))
        except Exception as e:
            yield sse_error(e)
        finally:
            stream.abort()
        yield DONE

    def pieces(self, c: CompletionOutput) -> list[str]:
        self.num_generated += len(c.token_ids)
        logprobs = _logprobs(self.ctx, self.body, c.logprobs, c.token_ids) if c.token_ids else None
        out = []
        if c.text or logprobs is not None:
            out.append(self.choice(c.index, {"content": c.text}, logprobs))
        if c.finish_reason is not None:
            out.append(self.choice(c.index, {}, None, c.finish_reason))
        return out
