"""A chat request on a server with MCP tools: the servers' tools are offered beside the request's own; while the
model's answer calls MCP tools only, the server runs the calls and asks again with their results in the
conversation, for at most max_rounds rounds (then once more with tool_choice "none", so that the model answers).
An answer that calls a tool of the request's own goes back to the client as it is. `usage` counts every round.

Streamed, every round streams as it is generated under the first round's id: text as it comes, the MCP calls held
back and run, and the last round's calls (the client's own tools) and finish sent at its end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .context import ServerContext
from .errors import APIError
from .protocol import ChatCompletionRequest, ChatMessage, StreamOptions
from .responses import ChatCompletionChunk, ChatCompletionResponse, UsageInfo
from .streaming import ChunkStream

Complete = Callable[[ServerContext, ChatCompletionRequest], Awaitable[Any]]


def uses_mcp(ctx: ServerContext, body: ChatCompletionRequest) -> bool:
    return ctx.mcp is not None and bool(ctx.mcp.names) and body.tool_choice != "none"


async def chat_with_mcp(
    ctx: ServerContext, body: ChatCompletionRequest, complete: Complete
) -> ChatCompletionResponse | ChunkStream[ChatCompletionChunk]:
    rounds = Rounds(ctx, body, complete)
    if not body.stream:
        return await rounds.answer()
    current: list[Any] = []  # the round streaming now: what aborting the request aborts
    return ChunkStream(rounds.stream(current), current)


class Rounds:
    def __init__(self, ctx: ServerContext, body: ChatCompletionRequest, complete: Complete) -> None:
        toolbox = ctx.mcp
        if body.n not in (None, 1):
            raise APIError(400, "a request answered with MCP tools takes n = 1", "n")
        own = {t.get("function", {}).get("name") for t in body.tools or []}
        clash = own & set(toolbox.names)
        if clash:
            raise APIError(400, f"the tool '{sorted(clash)[0]}' is also an MCP tool of this server", "tools")
        self.ctx, self.body, self.complete, self.toolbox = ctx, body, complete, toolbox
        self.tools = [*(body.tools or []), *toolbox.function_tools()]
        self.messages, self.choice = list(body.messages), body.tool_choice
        self.usage = [0, 0, 0]
        self.round = 0

    @property
    def last(self) -> bool:
        return self.round == self.toolbox.config.max_rounds

    def request(self, stream: bool) -> ChatCompletionRequest:
        choice = "none" if self.last else self.choice
        options = StreamOptions(include_usage=True) if stream else None  # each round's usage is counted
        update = {"messages": self.messages, "tools": self.tools, "tool_choice": choice, "stream": stream,
                  "stream_options": options}  # fmt: skip
        return self.body.model_copy(update=update)

    def runs(self, calls: list[Any]) -> bool:
        """Whether the server runs these calls (all of them MCP tools' and rounds left) rather than answering."""
        return bool(calls) and not self.last and all(self.toolbox.owns(c["function"]["name"]) for c in calls)

    async def run(self, content: str | None, calls: list[dict[str, Any]]) -> None:
        self.messages.append(ChatMessage.model_validate({"role": "assistant", "content": content, "tool_calls": calls}))
        for call in calls:
            text = await self.toolbox.call(call["function"]["name"], call["function"]["arguments"])
            self.messages.append(ChatMessage(role="tool", tool_call_id=call["id"], content=text))
        if self.choice == "required" or isinstance(self.choice, dict):
            self.choice = "auto"  # forced once: the rounds after it may answer
        self.round += 1

    def count(self, usage: UsageInfo) -> None:
        self.usage = [self.usage[0] + usage.prompt_tokens, self.usage[1] + usage.completion_tokens,
                      self.usage[2] + (usage.prompt_tokens_details.cached_tokens or 0)]  # fmt: skip

    async def answer(self) -> ChatCompletionResponse:
        while True:
            result: ChatCompletionResponse = await self.complete(self.ctx, self.request(stream=False))
            self.count(result.usage)
            message = result.choices[0].message
            calls = [c.model_dump() for c in message.tool_calls or []]
            if not self.runs(calls):
                result.usage = UsageInfo.of(*self.usage)
                return result
            await self.run(message.content, calls)

    async def stream(self, current: list[Any]) -> AsyncIterator[ChatCompletionChunk]:
        first: ChatCompletionChunk | None = None
        while True:
            chunks: ChunkStream[ChatCompletionChunk] = await self.complete(self.ctx, self.request(stream=True))
            current[:] = [chunks]
            held, text, calls = [], [], []
            try:
                async for chunk in chunks:
                    if first is None:
                        first = chunk
                    chunk = chunk.model_copy(update={"id": first.id, "created": first.created})
                    if not chunk.choices:
                        self.count(chunk.usage)
                        continue
                    delta = chunk.choices[0].delta
                    if "tool_calls" in delta or chunk.choices[0].finish_reason is not None:
                        held.append(chunk)
                        _gather(calls, delta.get("tool_calls", []))
                    elif "role" not in delta or self.round == 0:
                        text.append(delta.get("content") or "")
                        yield chunk
            finally:
                chunks.abort()
            if not self.runs(calls):
                break
            await self.run("".join(text) or None, calls)
        for chunk in held:
            yield chunk
        if self.body.include_usage:
            yield first.model_copy(update={"choices": [], "usage": UsageInfo.of(*self.usage)})


def _gather(calls: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Whole calls from OpenAI's tool-call deltas: a head (index, id, name) then pieces of the arguments."""
    for delta in deltas:
        if "id" in delta:
            calls.append({"id": delta["id"], "type": "function",
                          "function": {"name": delta["function"]["name"], "arguments": ""}})  # fmt: skip
        else:
            calls[delta["index"]]["function"]["arguments"] += delta["function"].get("arguments", "")
