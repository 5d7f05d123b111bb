"""ToolCallStream: a model's output read as it grows, split into content and tool calls. Text that could still be
the start of a call is held back, so no part of a call ever reaches the content; a call is given out whole, when
its end is read. The whole output is parsed through the same steps (answer_stream.parse_answer), so a stream's pieces
add up to the unstreamed message."""

from __future__ import annotations

from dataclasses import dataclass, field

from .calls import ToolCall, new_call_id
from .tool_format import ToolFormat


@dataclass
class ParsedDelta:
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    reasoning: str = ""  # a think block's text (AnswerStream)


class ToolCallStream:
    def __init__(self, fmt: ToolFormat) -> None:
        self.format = fmt
        self._buffer = ""
        self._in_call = False
        self._at_start = True  # no content but whitespace given out yet
        self._pending_space = ""  # whitespace given out only when more content follows it

    def feed(self, text: str) -> ParsedDelta:
        self._buffer += text
        return self._advance(final=False)

    def finish(self) -> ParsedDelta:
        delta = self._advance(final=True)
        self._pending_space = ""  # trailing whitespace is dropped
        return delta

    def _advance(self, final: bool) -> ParsedDelta:
        delta = ParsedDelta()
        while True:
            if not self._in_call:
                start = self.format.find_start(self._buffer, self._at_start)
                if start is None:
                    keep = 0 if final else self.format.hold_back(self._buffer, self._at_start)
                    cut = len(self._buffer) - keep
                    self._content(delta, self._buffer[:cut])
                    self._buffer = self._buffer[cut:]
                    return delta
                self._content(delta, self._buffer[:start])
                self._pending_space = ""  # whitespace before a call belongs to no one
                self._buffer = self._buffer[start:]
                self._in_call = True
            match = self.format.take(self._buffer, final)
            if match is None:
                return delta
            region, self._buffer, self._in_call = self._buffer[: match.end], self._buffer[match.end :], False
            if match.calls is None:
                self._content(delta, region)
            else:
                ids = self.format.short_ids
                delta.calls += [ToolCall(new_call_id(ids), c.name, c.arguments_text()) for c in match.calls]
            if final and not self._buffer:
                return delta

    def _content(self, delta: ParsedDelta, text: str) -> None:
        # trailing whitespace waits for what follows it, so any split of the text gives the same content
        body = text.rstrip()
        if not body:
            self._pending_space += text
            return
        delta.content += self._pending_space + body
        self._pending_space = text[len(body) :]
        self._at_start = False
