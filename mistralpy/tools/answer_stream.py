"""AnswerStream: a chat answer's text as it grows, split into reasoning (a think block), content and tool calls: the
think block first (reasoning/think.py), then the rest through the tool-call parser (stream_parser.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..reasoning.think import ThinkStream
from .calls import ToolCall
from .stream_parser import ParsedDelta, ToolCallStream


@dataclass
class ParsedOutput:
    content: str | None
    calls: list[ToolCall]
    reasoning: str | None = None


class AnswerStream:
    def __init__(self, think: ThinkStream | None, calls: ToolCallStream | None) -> None:
        self.think, self.calls = think, calls

    def feed(self, text: str) -> ParsedDelta:
        reasoning = ""
        if self.think is not None:
            split = self.think.feed(text)
            reasoning, text = split.reasoning, split.content
        delta = self.calls.feed(text) if self.calls is not None else ParsedDelta(text)
        delta.reasoning = reasoning
        return delta

    def finish(self) -> ParsedDelta:
        reasoning, text = "", ""
        if self.think is not None:
            split = self.think.finish()
            reasoning, text = split.reasoning, split.content
        if self.calls is None:
            return ParsedDelta(text, reasoning=reasoning)
        first, last = self.calls.feed(text), self.calls.finish()
        return ParsedDelta(first.content + last.content, first.calls + last.calls, reasoning)


def parse_answer(stream: AnswerStream, text: str) -> ParsedOutput:
    first, last = stream.feed(text), stream.finish()
    content, reasoning = first.content + last.content, first.reasoning + last.reasoning
    return ParsedOutput(content or None, first.calls + last.calls, reasoning or None)
