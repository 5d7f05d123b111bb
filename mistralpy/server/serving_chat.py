"""Chat completions, request -> response: check the limits, render the chat template (in a worker thread), generate,
build OpenAI's response objects.

No HTTP here: `chat_completion` returns a ChatCompletionResponse, or (stream=True) a ChunkStream of
ChatCompletionChunks. The HTTP route (http_edge.py) and the in-process Runner both call it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from ..chat_template import check_chat_template
from ..engine.async_engine import RequestStream
from ..outputs import CompletionOutput
from ..tools.answer_stream import AnswerStream
from ..tools.stream_parser import ParsedDelta
from ..tools.tool_use import ToolUse, finish_reason
from .chat_images import chat_images
from .context import ServerContext
from .errors import APIError
from .image_parts import image_urls
from .logprobs import chat_logprobs
from .mcp_rounds import chat_with_mcp, uses_mcp
from .prompt_tokens import TokenizedPrompt, chat_prompt_ids
from .protocol import ChatCompletionRequest
from .responses import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessageOut,
    FunctionCallOut,
    ToolCallOut,
    UsageInfo,
    now,
    random_id,
)
from .streaming import ChunkStream, add_streams, collect
from .structured_compile import sampling_params


async def chat_completion(
    ctx: ServerContext, body: ChatCompletionRequest
) -> ChatCompletionResponse | ChunkStream[ChatCompletionChunk]:
    """Validation errors are raised here, before any output; a stream's requests are already admitted. With MCP
    tools, the server runs the model's calls of them between rounds (mcp_rounds.py)."""
    if uses_mcp(ctx, body):
        return await chat_with_mcp(ctx, body, generate_chat)
    return await generate_chat(ctx, body)


async def generate_chat(
    ctx: ServerContext, body: ChatCompletionRequest
) -> ChatCompletionResponse | ChunkStream[ChatCompletionChunk]:
    """One model answer."""
    lora = ctx.lora_request(body.model, body.adapters)
    tools, prompt, images = await chat_prompt(ctx, body)
    tokenizer = ctx.engine.tokenizer
    # after rendering: a call's grammar depends on how the prompt ends (a think block opened or not)
    adjust = functools.partial(tools.sampling_params, tokenizer=tokenizer)
    params, grammar = await sampling_params(ctx, body, adjust, off_loop=tools.may_constrain)
    ctx.limits.check_tokens([len(prompt)], params.n, "messages")
    request_id = random_id("chatcmpl")
    prompts = [TokenizedPrompt(prompt, images=images)]
    streams = await add_streams(ctx.engine, prompts, params, request_id, body.cache_salt, grammar, lora)
    if body.stream:
        chunks = ChatChunks(ctx, body, request_id, len(prompt), tools)
        return ChunkStream(chunks.run(streams[0], params.n), streams, num_prompt_tokens=len(prompt))
    [result] = await collect(streams, params.n)
    choices = [_choice(ctx, body, tools, i, c) for i, c in enumerate(result.choices)]
    return ChatCompletionResponse(
        id=request_id,
        created=now(),
        model=ctx.response_model(body.model),
        choices=choices,
        usage=UsageInfo.of(
            len(result.prompt_token_ids), sum(len(c.token_ids) for c in result.choices), result.num_cached_tokens
        ),
    )


async def chat_prompt(ctx: ServerContext, body: ChatCompletionRequest) -> tuple[ToolUse, list[int], list | None]:
    """The request checked, its tools bound to the template, its prompt's token ids (rendered off the loop) and its
    images (decoded off the loop; their placeholders expanded in the prompt)."""
    ctx.check_model(body.model)
    ctx.limits.check_chat(body)
    tokenizer = ctx.engine.tokenizer
    tools = ToolUse(body.tools_spec(), request_template(ctx, body) or tokenizer.chat_template)
    images, expand = await chat_images(ctx.engine.engine.images, image_urls(body.messages), ctx.allow_image_urls)
    render = functools.partial(tools.render, variables=body.template_kwargs(), expand=expand)
    return tools, await chat_prompt_ids(tokenizer, [m.to_template() for m in body.messages], render), images


def request_template(ctx: ServerContext, body: ChatCompletionRequest) -> str | None:
    """The request's own chat_template, where the server takes one (checked: a broken one is a 400)."""
    if body.chat_template is None:
        return None
    if not ctx.trust_request_chat_template:
        message = "this server does not take a chat_template per request (start it with --trust-request-chat-template)"
        raise APIError(400, message, "chat_template")
    return check_chat_template(body.chat_template, "the request's chat_template")


def _choice(ctx: ServerContext, body: ChatCompletionRequest, tools: ToolUse, index: int, c: Any) -> ChatChoice:
    parsed = tools.parse(c.text)
    calls = [ToolCallOut(id=t.id, function=FunctionCallOut(name=t.name, arguments=t.arguments)) for t in parsed.calls]
    return ChatChoice(
        index=index,
        message=ChatMessageOut(content=parsed.content, tool_calls=calls or None, reasoning_content=parsed.reasoning),
        logprobs=_logprobs(ctx, body, c.logprobs, c.token_ids),
        finish_reason=finish_reason(c.finish_reason, parsed),
        stop_reason=c.stop_reason,
    )


def _logprobs(ctx: ServerContext, body: ChatCompletionRequest, entries: Any, token_ids: list[int]) -> Any:
    if not body.logprobs:
        return None
    return ChatLogprobs(content=chat_logprobs(entries, token_ids, body.top_logprobs or 0, ctx.engine.tokenizer))


class ChatChunks:
    """OpenAI's chunk sequence: a role delta per choice, content deltas, a finish chunk per choice, then a usage
    chunk (choices: []) when stream_options.include_usage asks for one. With tools, each choice's text goes through
    a ToolCallStream: content deltas never carry part of a call; each call is sent as OpenAI's tool-call deltas
    (index, id, type and name first, then its arguments)."""

    def __init__(
        self, ctx: ServerContext, body: ChatCompletionRequest, request_id: str, num_prompt: int, tools: ToolUse
    ) -> None:
        self.ctx, self.body, self.request_id, self.num_prompt = ctx, body, request_id, num_prompt
        self.created = now()
        self.num_generated = self.num_cached = 0
        self.parsers: dict[int, AnswerStream | None] = {i: tools.stream() for i in range(body.n)}
        self.num_calls = dict.fromkeys(range(body.n), 0)

    def chunk(self, choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.request_id,
            created=self.created,
            model=self.ctx.response_model(self.body.model),
            choices=choices,
            usage=usage,
        )

    def choice(
        self, index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None, stop: Any = None
    ) -> ChatCompletionChunk:
        choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish, stop_reason=stop)
        return self.chunk([choice])

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
        parsed = self.parse(c)
        out = []
        if parsed.reasoning:
            out.append(self.choice(c.index, {"reasoning_content": parsed.reasoning}))
        if parsed.content or logprobs is not None:
            out.append(self.choice(c.index, {"content": parsed.content}, logprobs))
        for call in parsed.calls:
            k = self.num_calls[c.index]
            self.num_calls[c.index] += 1
            head = {"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            out.append(self.choice(c.index, {"tool_calls": [head]}))
            out.append(self.choice(c.index, {"tool_calls": [{"index": k, "function": {"arguments": call.arguments}}]}))
        if c.finish_reason is not None:
            reason = "tool_calls" if self.num_calls[c.index] and c.finish_reason == "stop" else c.finish_reason
            out.append(self.choice(c.index, {}, None, reason, c.stop_reason))
        return out

    def parse(self, c: CompletionOutput) -> ParsedDelta:
        parser = self.parsers[c.index]
        if parser is None:
            return ParsedDelta(c.text)
        delta = parser.feed(c.text)
        if c.finish_reason is not None:
            last = parser.finish()
            delta = ParsedDelta(
                delta.content + last.content, delta.calls + last.calls, delta.reasoning + last.reasoning
            )
        return delta
