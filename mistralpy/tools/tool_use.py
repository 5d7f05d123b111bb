"""ToolUse: one chat request's tools and thinking, bound to its model's template: the prompt it renders, the grammar
it samples under, and how its answer is read back (reasoning, content, tool calls)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from ..errors import InvalidRequestError
from ..reasoning.think import Thinking, thinking_of
from ..sampling_params import SamplingParams
from ..structured.grammar import JSON_OPTIONS
from ..structured.params import StructuredOutputsParams
from ..tokenizer import Tokenizer
from .answer_stream import AnswerStream, ParsedOutput, parse_answer
from .format import format_of_template
from .grammar import tools_grammar
from .prompt import template_inputs
from .spec import ToolsSpec
from .stream_parser import ToolCallStream

_RESERVED = ("messages", "add_generation_prompt", "tools", "template", "tokenize")  # the request's own fields


class ToolUse:
    def __init__(self, spec: ToolsSpec | None, template: str | None) -> None:
        self.spec = spec
        self.template = template
        self.format = format_of_template(template)
        self.thinking: Thinking | None = None  # known once the prompt is rendered

    @property
    def may_constrain(self) -> bool:
        """Whether sampling_params may give the request a grammar of its own (tool calls forced or strict)."""
        return self.spec is not None and self.spec.constrained

    @property
    def parses_calls(self) -> bool:
        return self.spec is not None and self.spec.active

    def render(
        self,
        tokenizer: Tokenizer,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        variables: dict[str, Any] | None = None,
        expand: Callable[[str], str] | None = None,
    ) -> list[int]:
        """The prompt's token ids: the conversation with its tools, calls and results (`variables`: the request's
        chat_template_kwargs; `expand`: the rendered text's image placeholders expanded, multimodal/prompt_images)."""
        variables = variables or {}
        if not isinstance(variables, dict) or not all(isinstance(k, str) for k in variables):
            raise InvalidRequestError("chat_template_kwargs must be an object")
        reserved = [k for k in variables if k in _RESERVED]
        if reserved:
            raise InvalidRequestError(
                f"chat_template_kwargs may not set {', '.join(reserved)}: use the request's field"
            )
        messages, extra = template_inputs(messages, self.spec, self.format)
        text = tokenizer.apply_chat_template(
            messages, add_generation_prompt, template=self.template, **extra, **variables
        )
        self.thinking = thinking_of(self.template, text) if add_generation_prompt else None
        return tokenizer.encode(text if expand is None else expand(text), add_special_tokens=False)

    def sampling_params(self, params: SamplingParams, tokenizer: Tokenizer | None = None) -> SamplingParams:
        """`params` with the calls' grammar where the tool choice needs one (after a think block, where the template
        has them); special tokens kept in the text where the calls' markers are special tokens of the vocabulary
        (Mistral's `[TOOL_CALLS]`), or the parser could not see them."""
        if self.parses_calls and tokenizer is not None and params.skip_special_tokens:
            if any(is_special_token(tokenizer, m) for m in self.format.markers):
                params = dataclasses.replace(params, skip_special_tokens=False)
        think = self.thinking.grammar_prefix() if self.thinking is not None else None
        if self.spec is None or not self.spec.constrained:
            return _json_after_thinking(params, think)
        if params.structured_outputs is not None:
            raise InvalidRequestError(
                "this tool_choice (or a strict tool, or parallel_tool_calls false) constrains the output with a "
                "grammar, and so does the request's response_format / structured_outputs: use one of them"
            )
        grammar = tools_grammar(self.spec, self.format, think)
        return dataclasses.replace(params, structured_outputs=StructuredOutputsParams(grammar=grammar))

    def parse(self, text: str) -> ParsedOutput:
        stream = self.stream()
        return ParsedOutput(text, []) if stream is None else parse_answer(stream, text)

    def stream(self) -> AnswerStream | None:
        calls = ToolCallStream(self.format) if self.parses_calls else None
        think = self.thinking.stream() if self.thinking is not None else None
        return AnswerStream(think, calls) if calls is not None or think is not None else None


def _json_after_thinking(params: SamplingParams, think: str | None) -> SamplingParams:
    """A JSON schema (or any JSON object) constraint of a thinking model's answer, its think block allowed first."""
    spec = params.structured_outputs
    if think is None or spec is None or spec.kind not in ("json", "json_object"):
        return params
    schema = spec.json if spec.kind == "json" else {"type": "object"}
    body = f"body: %json {json.dumps({**schema, 'x-guidance': JSON_OPTIONS})}\n"
    return dataclasses.replace(
        params, structured_outputs=StructuredOutputsParams(grammar="start: think body\n" + body + think)
    )


def finish_reason(reason: str | None, parsed: ParsedOutput) -> str | None:
    """OpenAI's "tool_calls" when the model stopped after calling tools."""
    return "tool_calls" if parsed.calls and reason == "stop" else reason


def is_special_token(tokenizer: Tokenizer, text: str) -> bool:
    """Whether `text` is one special token of the vocabulary (dropped from the text by skip_special_tokens)."""
    added = tokenizer.backend.get_added_tokens_decoder()
    return any(token.content == text and token.special for token in added.values())
