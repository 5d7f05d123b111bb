"""Tool calling: the request's tools and tool_choice (spec.py), the prompt (prompt.py), one output format per model
family with its parser and grammar (hermes.py, llama3.py, mistral.py, generic.py; chosen by format.py), grammar-enforced
calls (grammar.py) and a streaming parser that never leaks a call into the content (stream_parser.py)."""

from .calls import ToolCall
from .spec import ToolsSpec, tools_spec
from .tool_use import ToolUse

__all__ = ["ToolCall", "ToolUse", "ToolsSpec", "tools_spec"]
