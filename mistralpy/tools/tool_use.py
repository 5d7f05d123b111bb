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

    def sampling_params(self, params: SamplingParams, tokenizer: Tokenizer | None = None) -> SamplingParams:
        """`params` with the calls' grammar where the tool choice needs one; special tokens kept in the text where
        the calls' markers are special tokens of the vocabulary (Mistral's `[TOOL_CALLS]`), or the parser could not
        see them."""
        if self.parses_calls and tokenizer is not None and params.skip_special_tokens:
            if any(is_special_token(tokenizer, m) for m in self.format.markers):
                params = dataclasses.replace(params, skip_special_tokens=False)
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


def is_special_token(tokenizer: Tokenizer, text: str) -> bool:
    """Whether `text` is one special token of the vocabulary (dropped from the text by skip_special_tokens)."""
    added = tokenizer.backend.get_added_tokens_decoder()
    return any(token.content == text and token.special for token in added.values())
