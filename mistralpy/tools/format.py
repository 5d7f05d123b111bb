"""Which tool-call format a chat template speaks, read from its text: the markers its calls use."""

from __future__ import annotations

from .generic import GenericFormat
from .hermes import HermesFormat
from .llama3 import Llama3Format
from .mistral import MistralFormat
from .tool_format import ToolFormat


def format_of_template(template: str | None) -> ToolFormat:
    """Mistral's `[TOOL_CALLS]`, Hermes/Qwen's `<tool_call>`, Llama 3's JSON with "parameters" (its templates write
    `<|python_tag|>` or ask for `{"name": function name, "parameters": ...}`); anything else gets the generic format
    (the tools in the system prompt), including templates that take `tools` in a format not listed here."""
    text = template or ""
    if "[TOOL_CALLS]" in text:
        return MistralFormat()
    if "<tool_call>" in text:
        return HermesFormat()
    if "<|python_tag|>" in text or ('"parameters"' in text and "<|start_header_id|>" in text):
        return Llama3Format()
    return GenericFormat()
