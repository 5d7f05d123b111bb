"""A Responses request as chat messages and a ChatCompletionRequest; a chat choice as Responses' output items and the
Response object around them."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..protocol import ChatCompletionRequest
from ..responses import ChatChoice, UsageInfo
from .protocol import FunctionCallItem, FunctionCallOutputItem, MessageItem, ResponsesRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def conversation(body: ResponsesRequest, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of the conversation so far: the earlier response's (its instructions are not carried over,
    as OpenAI does), then this request's input items."""
    messages = list(earlier)
    if isinstance(body.input, str):
        return messages + [{"role": "user", "content": body.input}]
    for item in body.input:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return messages


def chat_request(body: ResponsesRequest, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
    fields: dict[str, Any] = {"model": body.model, "stream": body.stream}
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    fields["messages"] = system + messages
    optional = {"max_tokens": body.max_output_tokens, "temperature": body.temperature, "top_p": body.top_p}
    fields.update({k: v for k, v in optional.items() if v is not None})
    if body.tools:
        fields["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)} for t in body.tools
        ]
    if isinstance(body.tool_choice, dict):
        if body.tool_choice.get("type") != "function" or not body.tool_choice.get("name"):
            fields["tool_choice"] = body.tool_choice  # chat's check names what is wrong with it
        else:
            fields["tool_choice"] = {"type": "function", "function": {"name": body.tool_choice["name"]}}
    elif body.tool_choice is not None:
        fields["tool_choice"] = body.tool_choice
    if body.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = body.parallel_tool_calls
    fmt = body.text.format if body.text is not None else None
    if fmt is not None and fmt.type == "json_schema":
        schema = {"name": fmt.name or "output", "schema": fmt.schema_ or {}, "strict": fmt.strict}
        fields["response_format"] = {
            "type": "json_schema",
            "json_schema": {k: v for k, v in schema.items() if v is not None},
        }
    elif fmt is not None and fmt.type == "json_object":
        fields["response_format"] = {"type": "json_object"}
    if body.stream:
        fields["stream_options"] = {"include_usage": True}
    return ChatCompletionRequest(**fields)


def output_items(choice: ChatChoice) -> list[dict[str, Any]]:
    message = choice.message
    items = []
    if message.reasoning_content:
        items.append(reasoning_item(new_id("rs"), message.reasoning_content))
    if message.content:
        items.append(message_item(new_id("msg"), message.content, "completed"))
    for call in message.tool_calls or []:
        items.append(call_item(new_id("fc"), call.id, call.function.name, call.function.arguments, "completed"))
    return items


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [text_part(text)]}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def assistant_message(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The output items as the chat message a later response's conversation continues from."""
    text = "".join(p["text"] for i in items if i["type"] == "message" for p in i["content"])
    calls = [
        {"id": i["call_id"], "type": "function", "function": {"name": i["name"], "arguments": i["arguments"]}}
        for i in items
        if i["type"] == "function_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def usage_of(usage: UsageInfo | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.prompt_tokens_details.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def response_object(body: ResponsesRequest, response_id: str, model: str, created: float) -> dict[str, Any]:
    """The Response with its request's settings, in progress and without output yet."""
    text = (
        body.text.model_dump(by_alias=True, exclude_none=True)
        if body.text is not None
        else {"format": {"type": "text"}}
    )
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created),
        "status": "in_progress",
        "model": model,
        "output": [],
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "text": text,
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "background": body.background,
        "metadata": body.metadata or {},
        "truncation": "disabled",
        "usage": None,
        "incomplete_details": None,
        "error": None,
    }


def finish(response: dict[str, Any], items: list[dict[str, Any]], finish_reason: str | None, usage: Any) -> None:
    """The Response completed, or incomplete where max_output_tokens ended it."""
    response["output"] = items
    response["usage"] = usage_of(usage)
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"


def fail(response: dict[str, Any], status: int, message: str) -> None:
    """The Response failed: its error from the status and message status_of gives."""
    code = "server_error" if status >= 500 else "invalid_request"
    response.update(status="failed", error={"code": code, "message": message})


def now() -> float:
    return time.time()
