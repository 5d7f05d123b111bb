"""Anthropic's Messages request as an OpenAI ChatCompletionRequest; a chat completion back as Anthropic's Message."""

from __future__ import annotations

import json
from typing import Any

from ...errors import InvalidRequestError
from ..protocol import ChatCompletionRequest
from ..responses import ChatCompletionResponse, random_id
from .protocol import CountTokensRequest, Message, MessagesRequest, TextBlock, ToolChoice, ToolResultBlock, ToolUseBlock


def chat_request(body: MessagesRequest | CountTokensRequest) -> ChatCompletionRequest:
    """The same conversation, tools and sampling fields in OpenAI's terms (InvalidRequestError where they do not
    translate)."""
    fields: dict[str, Any] = {"model": body.model, "messages": _system(body.system)}
    for message in body.messages:
        fields["messages"] += _role_messages(message)
    if body.tools:
        fields["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
            }
            for t in body.tools
        ]
    if body.tool_choice is not None:
        fields.update(_tool_choice(body.tool_choice))
    if isinstance(body, MessagesRequest):
        sampling = {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k}
        fields.update({k: v for k, v in sampling.items() if v is not None})
        fields.update(max_tokens=body.max_tokens, stream=body.stream, stop=body.stop_sequences)
        if body.output_config is not None and body.output_config.format is not None:
            schema = body.output_config.format.schema_
            fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
        if body.stream:
            fields["stream_options"] = {"include_usage": True}
    return ChatCompletionRequest(**fields)


def _system(system: str | list[TextBlock] | None) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = system if isinstance(system, str) else "\n".join(b.text for b in system)
    return [{"role": "system", "content": text}]


def _role_messages(message: Message) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: an assistant's text and tool_use blocks become one message with
    tool_calls; a user's tool_result blocks become `tool` messages, its text blocks user messages, in their order."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return [_assistant(message.content)]
    out: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text()})
        elif isinstance(block, TextBlock):
            if out and out[-1]["role"] == "user":
                out[-1]["content"] += block.text
            else:
                out.append({"role": "user", "content": block.text})
        else:
            raise _misplaced(block.type, "user")
    return out


def _assistant(blocks: list[Any]) -> dict[str, Any]:
    text, thinking, calls = [], [], []
    for block in blocks:
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif block.type == "thinking":
            thinking.append(block.thinking)
        else:
            raise _misplaced(block.type, "assistant")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        out["tool_calls"] = calls
    if thinking:
        out["reasoning_content"] = "".join(thinking)
    return out


def _misplaced(kind: str, role: str) -> Exception:
    return InvalidRequestError(f"messages: a {kind} block cannot be in a {role} message")


def _tool_choice(choice: ToolChoice) -> dict[str, Any]:
    """Anthropic's auto / any / tool / none as OpenAI's auto / required / a named function / none."""
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError("tool_choice: type 'tool' needs a name")
        value: Any = {"type": "function", "function": {"name": choice.name}}
    else:
        value = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    out: dict[str, Any] = {"tool_choice": value}
    if choice.disable_parallel_tool_use is not None:
        out["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    return out


def stop_of(finish_reason: str | None, stop_reason: int | str | None) -> tuple[str | None, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for an OpenAI finish_reason and vLLM's stop_reason."""
    if finish_reason == "tool_calls":
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if finish_reason == "stop" and isinstance(stop_reason, str):
        return "stop_sequence", stop_reason
    return ("end_turn", None) if finish_reason == "stop" else (finish_reason, None)


def message_of(response: ChatCompletionResponse) -> dict[str, Any]:
    """Anthropic's Message for a chat completion of one choice."""
    choice = response.choices[0]
    out = choice.message
    content: list[dict[str, Any]] = []
    if out.reasoning_content:
        content.append({"type": "thinking", "thinking": out.reasoning_content, "signature": ""})
    if out.content:
        content.append({"type": "text", "text": out.content})
    for call in out.tool_calls or []:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": json.loads(call.function.arguments),
            }
        )
    stop_reason, stop_sequence = stop_of(choice.finish_reason, choice.stop_reason)
    usage = response.usage
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    }


def message_id() -> str:
    return random_id("msg").replace("-", "_")
