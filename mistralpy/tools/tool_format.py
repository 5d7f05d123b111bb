"""ToolFormat: how one model family writes tool calls: where a call starts in the text, where it ends, what it means,
and the grammar (Lark) that makes the model write one."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .calls import ParsedCall


@dataclass(frozen=True)
class CallMatch:
    """A call region read from the text: its calls (None: it is not a call after all, so it is content; empty: an
    unfinished call at the end of the output, dropped) and where it ends."""

    calls: list[ParsedCall] | None
    end: int


class ToolFormat(ABC):
    """A format whose calls start with a marker text (Hermes' `<tool_call>`, Mistral's `[TOOL_CALLS]`)."""

    name = ""
    marker = ""
    calls_in_history = True  # the template renders assistant tool_calls and tool results itself
    short_ids = False  # call ids of 9 letters or digits (Mistral's templates check them)

    @property
    def markers(self) -> tuple[str, ...]:
        """The texts that delimit calls (the parser must see them in the output's text)."""
        return (self.marker,)

    def find_start(self, text: str, at_start: bool) -> int | None:
        """Where a call starts in `text` (content so far is `at_start` when nothing but whitespace preceded it)."""
        index = text.find(self.marker)
        return index if index >= 0 else None

    def hold_back(self, text: str, at_start: bool) -> int:
        """How many trailing characters of `text` could still become the start of a call."""
        for size in range(min(len(self.marker) - 1, len(text)), 0, -1):
            if self.marker.startswith(text[-size:]):
                return size
        return 0

    @abstractmethod
    def take(self, text: str, final: bool) -> CallMatch | None:
        """`text` starts at a call: the call(s) it makes and their end; None while the call is still incomplete."""

    @abstractmethod
    def grammar(self, body: str, parallel: bool, optional: bool) -> str:
        """Lark rules (a `start` rule) for the calls, `body` being the rule of one call's JSON object. `optional`:
        the model may answer in text instead, or say some text before its calls."""

    arguments_key = "arguments"


def free_text_lexemes(marker: str) -> str:
    """TEXT (text without the marker) and PRE (text that ends at its first marker): two lexemes, so that the lexer
    knows at the marker which one it is reading."""
    m = lark_regex_escape(marker)
    return f"TEXT: /(.|\\n)+/ & ~/(.|\\n)*{m}(.|\\n)*/\nPRE: /(.|\\n)*{m}/ & ~/(.|\\n)*{m}(.|\\n)+/\n"


def lark_regex_escape(text: str) -> str:
    out = []
    for ch in text:
        out.append("\\" + ch if ch in r".^$*+?()[]{}|\/-" else ("\\n" if ch == "\n" else ch))
    return "".join(out)


def lark_string(text: str) -> str:
    return json.dumps(text)


def decode_json_prefix(text: str) -> tuple[object, int] | None:
    """The JSON value at the start of `text` (after whitespace) and where it ends; None when there is none (yet)."""
    stripped = len(text) - len(text.lstrip())
    try:
        value, end = json.JSONDecoder().raw_decode(text, stripped)
    except ValueError:
        return None
    return value, end
