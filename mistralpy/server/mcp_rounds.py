"""A chat request on a server with MCP tools: the servers' tools are offered beside the request's own; while the
model's answer calls MCP tools only, the server runs the calls and asks again with their results in the
conversation, for at most max_rounds rounds (then once more with tool_choice "none", so that the model answers).
An answer that calls a tool of the request's own goes back to the client as it is. `usage` counts every round.

A streamed request gets its final round as a stream of chunks once that round is done: the rounds before it run
inside the server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .context import ServerContext
from .errors import APIError
from .protocol import ChatCompletionRequest, ChatMessage
from .responses import ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse, UsageInfo
from .streaming import ChunkStream

Complete = Callable[[ServerContext, ChatCompletionRequest], Awaitable[Any]]


def uses_mcp(ctx: ServerContext, body: ChatCompletionRequest) -> bool:
    return ctx.mcp is not None and bool(ctx.mcp.names) and body.tool_choice != "none"


async def chat_with_mcp(
    ctx: ServerContext, body: ChatCompletionRequest, complete: Complete
) -> ChatCompletionResponse | ChunkStream[ChatCompletionChunk]:
    toolbox = ctx.mcp
    if body.n not in (None, 1):
        raise APIError(400, "a request answered with MCP tools takes n = 1", "n")
    own = [t.get("function", {}).get("name") for t in body.tools or []]
    clash = set(own) & set(toolbox.names)
    if clash:
        raise APIError(400, f"the tool '{sorted(clash)[0]}' is also an MCP tool of this server", "tools")
    tools = [*(body.tools or []), *toolbox.function_tools()]
    messages, choice, usage = list(body.messages), body.tool_choice, [0, 0, 0]
    max_rounds = toolbox.config.max_rounds
    for round_ in range(max_rounds + 1):
        last = round_ == max_rounds
        update = {"messages": messages, "tools": tools, "tool_choice": "none" if last else choice, "stream": False}
        result: ChatCompletionResponse = await complete(ctx, body.model_copy(update=update))
        _add(usage, result.usage)
        message = result.choices[0].message
        calls = message.tool_calls or []
        if not calls or not all(toolbox.owns(c.function.name) for c in calls):
            break
        messages.append(ChatMessage.model_validate({
            "role": "assistant", "content": message.content,
            "tool_calls": [c.model_dump() for c in calls],
        }))  # fmt: skip
        for call in calls:
            text = await toolbox.call(call.function.name, call.function.arguments)
            messages.append(ChatMessage(role="tool", tool_call_id=call.id, content=text))
        if choice == "required" or isinstance(choice, dict):
            choice = "auto"  # forced once: the rounds after it may answer
    result.usage = UsageInfo.of(usage[0], usage[1], usage[2])
    if body.stream:
        return ChunkStream(_chunks(result, body.include_usage), [], num_prompt_tokens=usage[0])
    return result


def _add(total: list[int], usage: UsageInfo) -> None:
    total[0] += usage.prompt_tokens
    total[1] += usage.completion_tokens
    total[2] += usage.prompt_tokens_details.cached_tokens or 0


async def _chunks(result: ChatCompletionResponse, include_usage: bool) -> AsyncIterator[ChatCompletionChunk]:
    """The final round's answer as the chunks a streamed answer has (serving_chat.ChatChunks' shapes)."""
    choice, message = result.choices[0], result.choices[0].message

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: UsageInfo | None = None) -> Any:
        choices = (
            []
            if delta is None
            else [
                ChatChunkChoice(
                    index=0,
                    delta=delta,
                    logprobs=None,
                    finish_reason=finish,
                    stop_reason=choice.stop_reason if finish else None,
                )
            ]
        )
        return ChatCompletionChunk(id=result.id, created=result.created, model=result.model, choices=choices,
                                   usage=usage)  # fmt: skip

    yield chunk({"role": "assistant", "content": ""})
    if message.reasoning_content:
        yield chunk({"reasoning_content": message.reasoning_content})
    if message.content:
        yield chunk({"content": message.content})
    for k, call in enumerate(message.tool_calls or []):
        function = {"name": call.function.name, "arguments": ""}
        head = {"index": k, "id": call.id, "type": "function", "function": function}
        yield chunk({"tool_calls": [head]})
        yield chunk({"tool_calls": [{"index": k, "function": {"arguments": call.function.arguments}}]})
    yield chunk({}, choice.finish_reason)
    if include_usage:
        yield chunk(None, usage=result.usage)
