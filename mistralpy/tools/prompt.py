"""The conversation and template variables for a request with tools: the model's own template renders `tools`,
assistant `tool_calls` and `role: "tool"` messages where it knows them; otherwise the generic format writes them."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import InvalidRequestError
from .generic import GenericFormat
from .spec import ToolsSpec
from .tool_format import ToolFormat


def template_inputs(
    messages: list[dict[str, Any]], spec: ToolsSpec | None, fmt: ToolFormat
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages, extra template variables) to render."""
    messages = [_with_argument_objects(i, m) for i, m in enumerate(messages)]
    if fmt.short_ids:
        messages = [_short_ids(m) for m in messages]
    if isinstance(fmt, GenericFormat):
        has_history = any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
        if spec is not None or has_history:
            return fmt.history(messages, spec or ToolsSpec((), "none")), {}
        return messages, {}
    return messages, {"tools": [t.to_openai() for t in spec.tools]} if spec is not None else {}


def _with_argument_objects(index: int, message: dict[str, Any]) -> dict[str, Any]:
    """Templates write arguments with `| tojson` (as transformers and vLLM hand them over: objects, not the JSON
    text OpenAI's messages carry), and they look at the content of a message that only calls tools."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    converted = []
    for j, call in enumerate(calls):
        function = dict(call.get("function") or {})
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments) if arguments.strip() else {}
            except ValueError as e:
                raise InvalidRequestError(
                    f"messages[{index}].tool_calls[{j}].function.arguments is not JSON: {e}"
                ) from None
        converted.append({**call, "function": function})
    return {**message, "tool_calls": converted, "content": message.get("content") or ""}


def _short_ids(message: dict[str, Any]) -> dict[str, Any]:
    """Mistral's templates take 9-character alphanumeric ids: longer ones (OpenAI's `call_...`) keep their last 9
    letters and digits, the same for a call and its result (as vLLM does)."""
    out = dict(message)
    if message.get("tool_calls"):
        out["tool_calls"] = [{**c, "id": short_id(c.get("id"))} for c in message["tool_calls"]]
    if message.get("tool_call_id") is not None:
        out["tool_call_id"] = short_id(message["tool_call_id"])
    return out


def short_id(call_id: Any) -> Any:
    if not isinstance(call_id, str):
        return call_id
    alnum = re.sub(r"[^A-Za-z0-9]", "", call_id)
    return alnum[-9:] if len(alnum) >= 9 else call_id
