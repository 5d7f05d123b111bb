"""ToolUse: one request's tools bound to its model's format: the prompt it renders, the grammar it samples under,
and how its output is read back."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import InvalidRequestError
from ..sampling_params import SamplingParams
from ..tokenizer import Tokenizer
from .format import format_of_template
from .grammar import tools_constraint
from .prompt import template_inputs
from .spec import ToolsSpec
from .stream_parser import ParsedOutput, ToolCallStream, parse_output


class ToolUse:
    def __init__(self, spec: ToolsSpec | None, template: str | None) -> None:
        self.spec = spec
        self.format = format_of_template(template)

    @property
    def parses_calls(self) -> bool:
        return self.spec is not None and self.spec.active

    def render(
        self, tokenizer: Tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **variables: Any
    ) -> list[int]:
        """The prompt's token ids: the conversation with its tools, calls and results."""
        messages, extra = template_inputs(messages, self.spec, self.format)
        return tokenizer.apply_chat_template(messages, add_generation_prompt, tokenize=True, **extra, **variables)

    def sampling_params(self, params: SamplingParams) -> SamplingParams:
        """`params` with the calls' grammar where the tool choice needs one."""
        if self.spec is None or not self.spec.constrained:
            return params
        if params.structured_outputs is not None:
            raise InvalidRequestError(
                "this tool_choice (or a strict tool, or parallel_tool_calls false) constrains the output with a "
                "grammar, and so does the request's response_format / structured_outputs: use one of them"
            )
        return dataclasses.replace(params, structured_outputs=tools_constraint(self.spec, self.format))

    def parse(self, text: str) -> ParsedOutput:
        if not self.parses_calls:
            return ParsedOutput(text, [])
        return parse_output(self.format, text)

    def stream(self) -> ToolCallStream | None:
        return ToolCallStream(self.format) if self.parses_calls else None


def finish_reason(reason: str | None, parsed: ParsedOutput) -> str | None:
    """OpenAI's "tool_calls" when the model stopped after calling tools."""
    return "tool_calls" if parsed.calls and reason == "stop" else reason
