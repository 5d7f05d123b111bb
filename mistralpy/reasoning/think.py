"""Thinking: whether a chat template's answers start with a think block (or inside one, where the prompt opened it:
DeepSeek-R1's templates end with `<think>\n`); ThinkStream splits an answer's text into reasoning and content as it
grows, holding back what could still be a tag; think_prefix is the grammar rule that lets a block come first."""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Thinking:
    starts_inside: bool  # the prompt ends in an open think block: the answer's text begins with the reasoning

    def stream(self) -> ThinkStream:
        return ThinkStream(self.starts_inside)

    def grammar_prefix(self) -> str:
        """Lark: `think` (the reasoning, up to and with its closing tag, and a little whitespace after it), which a
        constrained answer may (or, where the prompt opened the block, must) start with."""
        lexeme = "THINK: /(.|\\n)*<\\/think>/ & ~/(.|\\n)*<\\/think>(.|\\n)+/\nTHINK_SPACE: /[ \\n]{0,4}/\n"
        if self.starts_inside:
            return "think: THINK THINK_SPACE\n" + lexeme
        return 'think: ("<think>" THINK THINK_SPACE)?\n' + lexeme


def thinking_of(template: str | None, prompt_text: str) -> Thinking | None:
    """The template's thinking, if it has a think block; None otherwise, or where the prompt already closed an
    (empty) block: Qwen3's templates do that with enable_thinking false."""
    tail = prompt_text.rstrip()
    if not template or CLOSE not in template or tail.endswith(CLOSE):
        return None
    return Thinking(starts_inside=tail.endswith(OPEN))


@dataclass
class ThinkDelta:
    reasoning: str = ""
    content: str = ""


class ThinkStream:
    def __init__(self, starts_inside: bool) -> None:
        self._state = "inside" if starts_inside else "start"  # start -> inside -> after, or start -> after
        self._buffer = ""
        self._content_started = False

    def feed(self, text: str) -> ThinkDelta:
        self._buffer += text
        return self._advance(final=False)

    def finish(self) -> ThinkDelta:
        return self._advance(final=True)

    def _advance(self, final: bool) -> ThinkDelta:
        delta = ThinkDelta()
        if self._state == "start":
            stripped = self._buffer.lstrip()
            if stripped.startswith(OPEN):
                self._state, self._buffer = "inside", stripped[len(OPEN) :]
            elif OPEN.startswith(stripped) and not final:
                return delta  # could still be the opening tag
            else:
                self._state = "after"
        if self._state == "inside":
            end = self._buffer.find(CLOSE)
            if end < 0:
                keep = 0 if final else _partial_tag(self._buffer, CLOSE)
                delta.reasoning, self._buffer = (
                    self._buffer[: len(self._buffer) - keep],
                    self._buffer[len(self._buffer) - keep :],
                )
                return delta
            delta.reasoning, self._buffer, self._state = self._buffer[:end], self._buffer[end + len(CLOSE) :], "after"
        if self._state == "after":
            text, self._buffer = self._buffer, ""
            if not self._content_started:
                text = text.lstrip()
                self._content_started = bool(text)
            delta.content = text
        return delta


def _partial_tag(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
