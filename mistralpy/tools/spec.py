"""The request's tools: function tools with JSON-schema parameters, tool_choice, parallel_tool_calls, strict;
validated once, with errors that name the field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import llguidance

from ..errors import InvalidRequestError

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # OpenAI's rule for function names
_MODES = ("auto", "none", "required")


class ToolChoice(str, Enum):
    """mistral.rs's Python `ToolChoice` (NoTools, Auto), and Required; anywhere a tool_choice string is taken."""

    NoTools = "none"
    Auto = "auto"
    Required = "required"


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: dict[str, Any]  # a JSON schema; {"type": "object", "properties": {}} when the tool takes none
    strict: bool = False

    def to_openai(self) -> dict[str, Any]:
        """The tool as the chat templates expect it (OpenAI's shape)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolsSpec:
    tools: tuple[FunctionTool, ...]
    choice: str  # "auto", "none", "required" or "function" (one named tool)
    named: str | None = None  # the tool tool_choice names
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the model may call tools at all (tool_choice "none" leaves the tools in the prompt only)."""
        return self.choice != "none"

    @property
    def forced(self) -> bool:
        return self.choice in ("required", "function")

    @property
    def callable_tools(self) -> tuple[FunctionTool, ...]:
        return tuple(t for t in self.tools if t.name == self.named) if self.named else self.tools

    @property
    def constrained(self) -> bool:
        """A grammar is needed: a call is forced, a strict tool's arguments must validate, or at most one call."""
        return self.active and (self.forced or not self.parallel or any(t.strict for t in self.tools))


def tools_spec(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None) -> ToolsSpec | None:
    """The spec of a request's tool fields (OpenAI's shapes, as dicts), or None without tools."""
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        _fail("parallel_tool_calls", f"must be true or false, got {parallel_tool_calls!r}")
    if isinstance(tools, (list, tuple)) and not tools:
        _fail("tools", "empty array: give at least one tool, or leave tools out")
    if tools is None:
        if tool_choice not in (None, "none", "auto", ToolChoice.NoTools, ToolChoice.Auto):
            _fail("tool_choice", f"{_shown(tool_choice)} needs tools, and the request has none")
        return None
    if not isinstance(tools, (list, tuple)):
        _fail("tools", f"must be a list of tools, got {type(tools).__name__}")
    parsed = tuple(_tool(i, t) for i, t in enumerate(tools))
    names = [t.name for t in parsed]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        _fail("tools", f"function names must be unique; {', '.join(doubled)} appear more than once")
    choice, named = _choice(tool_choice, names)
    spec = ToolsSpec(parsed, choice, named, True if parallel_tool_calls is None else parallel_tool_calls)
    if spec.constrained:  # the schemas become a grammar: llguidance must take them (free calls are only parsed)
        for i, tool in enumerate(parsed):
            if tool in spec.callable_tools:
                _check_schema(f"tools[{i}].function.parameters", tool.parameters)
    return spec


def _tool(index: int, tool: Any) -> FunctionTool:
    where = f"tools[{index}]"
    if not isinstance(tool, dict):
        _fail(where, f"must be an object, got {type(tool).__name__}")
    if tool.get("type") != "function":
        _fail(f"{where}.type", f"only 'function' tools are supported, got {_shown(tool.get('type'))}")
    unknown = sorted(set(tool) - {"type", "function"})
    if unknown:
        _fail(where, f"unknown fields {unknown}")
    function = tool.get("function")
    if not isinstance(function, dict):
        _fail(f"{where}.function", "must be an object with a name")
    unknown = sorted(set(function) - {"name", "description", "parameters", "strict"})
    if unknown:
        _fail(f"{where}.function", f"unknown fields {unknown}")
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        _fail(f"{where}.function.name", f"must be 1-64 letters, digits, '_', '.' or '-', got {_shown(name)}")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        _fail(f"{where}.function.description", "must be a string")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        _fail(f"{where}.function.strict", f"must be true or false, got {strict!r}")
    parameters = _parameters(f"{where}.function.parameters", function.get("parameters"))
    return FunctionTool(name, description, parameters, bool(strict))


def _parameters(where: str, schema: Any) -> dict[str, Any]:
    if schema is None:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        _fail(where, f"must be a JSON schema object, got {type(schema).__name__}")
    if schema.get("type", "object") != "object":
        _fail(where, f"must describe an object (type 'object'), got type {_shown(schema.get('type'))}")
    return schema


def _check_schema(where: str, schema: dict[str, Any]) -> None:
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
    except (ValueError, TypeError) as e:
        _fail(where, f"is not a schema llguidance accepts: {e}")
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        _fail(where, f"is not a schema llguidance accepts: {' '.join(messages[0].split())}")


def _choice(value: Any, names: list[str]) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    if isinstance(value, ToolChoice):
        return value.value, None
    if isinstance(value, str):
        if value not in _MODES:
            _fail("tool_choice", f"must be one of {', '.join(_MODES)} or a named function, got {_shown(value)}")
        return value, None
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(function, dict):
        _fail("tool_choice", f'must be a string or {{"type": "function", "function": {{"name": ...}}}}, got '
              f"{_shown(value)}")  # fmt: skip
    name = function.get("name")
    if name not in names:
        _fail("tool_choice.function.name", f"{_shown(name)} is not one of the tools ({', '.join(names)})")
    return "function", name


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:120] + "..."


def _fail(field: str, rule: str) -> None:
    raise InvalidRequestError(f"Invalid {field}: {rule}")
