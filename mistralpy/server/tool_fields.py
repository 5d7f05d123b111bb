"""The request fields of tool calling: assistant messages' `tool_calls` (OpenAI's shape; the tool definitions and
tool_choice are checked by mistralpy.tools.spec, which the Python API shares)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .protocol_base import OpenAIModel


class FunctionCallIn(OpenAIModel):
    name: str = Field(min_length=1)
    arguments: str  # a JSON object's text


class ToolCallIn(OpenAIModel):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn
