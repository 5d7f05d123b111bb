"""The llguidance grammar (Lark, each call's JSON object an inline `%json` schema) that makes the model call a tool:
forced for tool_choice "required" or a named tool; with "auto" it lets the model answer in text, but a call it makes
follows the schema (a strict tool, or parallel_tool_calls false)."""

from __future__ import annotations

import copy
import json
from typing import Any

from ..structured.grammar import JSON_OPTIONS
from .spec import FunctionTool, ToolsSpec
from .tool_format import ToolFormat


def tools_grammar(spec: ToolsSpec, fmt: ToolFormat, think: str | None = None) -> str:
    """The Lark text: the format's rules around `body`, one call's object (any callable tool's, by name); `think`
    (reasoning/think.py's rules) comes first where the model thinks before it answers."""
    variants = [call_schema(tool, fmt.arguments_key) for tool in spec.callable_tools]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    # compact whitespace, as the structured-output grammars: free whitespace runs away on small models
    schema = {**schema, "x-guidance": JSON_OPTIONS}
    rules = fmt.grammar("body", spec.parallel, optional=not spec.forced) + f"body: %json {json.dumps(schema)}\n"
    if think is None:
        return rules
    return "start: think answer\nanswer: " + rules.removeprefix("start: ") + think


def call_schema(tool: FunctionTool, arguments_key: str) -> dict[str, Any]:
    """{"name": <this tool>, <arguments_key>: <its parameters>}, no other keys."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, arguments_key: closed(tool.parameters)},
        "required": ["name", arguments_key],
        "additionalProperties": False,
    }


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The parameters' object without keys it does not declare (unless it says what others may be)."""
    if "properties" not in schema or "additionalProperties" in schema:
        return schema
    out = copy.copy(schema)
    out["additionalProperties"] = False
    return out
