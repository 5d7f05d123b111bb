"""IncrementalDetokenizer: token ids -> text deltas, UTF-8 safe, with stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .stop_matcher import StopHit, StopMatcher

# Prompt tokens decoded ahead of the output, so the first output token decodes as it would mid-text
# (a SentencePiece decoder strips the leading space of whatever it decodes first).
_CONTEXT_TOKENS = 5
# An incomplete UTF-8 character spans at most 4 bytes, hence at most 4 tokens (plus one that started it); a longer
# run still ending in U+FFFD is genuinely invalid (or a real U+FFFD) and is let out rather than held forever.
_MAX_HELD_TOKENS = 6
_REPLACEMENT = "\ufffd"


class _Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Decodes one sequence's output a token at a time.

    Only a short window of recent tokens is decoded per step: `_window[:_read]` was already turned into text
    (its decoded form is `_prefix_text`), `_window[_read:]` was not. Text that could be the start of a stop string is
    held back from `get_next_delta()` and `output_text` until it is resolved, so the deltas always add up to
    `output_text`, and a stream never shows part of a stop string. A `StopMatcher` reads each new character once,
    so the work per token does not grow with the number or the length of the stop strings.
    """

    def __init__(
        self,
        tokenizer: _Decoder,
        prompt_token_ids: Sequence[int],
        skip_special_tokens: bool = True,
        stop: Sequence[str] | None = None,
        include_stop_str_in_output: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._matcher = StopMatcher(stop) if any(stop or ()) else None
        self._hold_stop_prefixes = self._matcher is not None and not include_stop_str_in_output
        self._include_stop = include_stop_str_in_output
        self._window = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix_text = self._decode(self._window)
        if self._prefix_text.endswith(_REPLACEMENT):  # a prompt cut mid-character is no usable context
            self._window, self._prefix_text = [], ""
        self._read = len(self._window)
        self._text = ""
        self._safe_end = 0  # _text[:_safe_end] is final: it can no longer be cut by a stop string
        self._emitted = 0  # _text[:_emitted] was returned by get_next_delta
        self.stop_reason: str | None = None  # the stop string that ended the text
        self.finished = False

    @property
    def output_text(self) -> str:
        """The text so far, less what is held back; the whole text once stopped or finished."""
        return self._text[: self._safe_end]

    def update(self, new_token_ids: Sequence[int]) -> str | None:
        """Add tokens; returns the stop string they complete, if any (the text then ends before or after it)."""
        if self.finished:
            return None
        self._window.extend(new_token_ids)
        self._append(self._decode_unread(force=False))
        return self.stop_reason

    def get_next_delta(self, finished: bool = False) -> str:
        """Text not returned yet. With `finished` (the sequence ended), everything held back is let out too."""
        if finished and not self.finished:
            self._append(self._decode_unread(force=True))
            self.finished = True
            self._safe_end = len(self._text)
        delta = self._text[self._emitted : self._safe_end]
        self._emitted = self._safe_end
        return delta

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)

    def _decode_unread(self, force: bool) -> str:
        """The text the unread tokens add, or "" while they end inside a multi-byte character."""
        if self._read == len(self._window):
            return ""
        full = self._decode(self._window)
        held = len(self._window) - self._read
        complete = full.startswith(self._prefix_text) and not full.endswith(_REPLACEMENT)
        if not (complete or force or held >= _MAX_HELD_TOKENS):
            return ""
        new_text = full[len(self._prefix_text) :]
        self._window = self._window[self._read :]
        self._read = len(self._window)
        self._prefix_text = self._decode(self._window)
        return new_text

    def _append(self, new_text: str) -> None:
        if not new_text:
            return
        self._text += new_text
        hit = self._matcher.feed(new_text) if self._matcher is not None else None
        if hit is not None:
            self._stop_at(hit)
            return
        held = self._matcher.partial_len if self._hold_stop_prefixes else 0  # what could still grow into a stop
        self._safe_end = max(self._emitted, len(self._text) - held)

    def _stop_at(self, hit: StopHit) -> None:
        """Cut the text before the stop string (after it with include_stop_str_in_output) and finish."""
        self._text = self._text[: hit.start + len(hit.stop) if self._include_stop else hit.start]
        self.stop_reason, self.finished = hit.stop, True
        self._safe_end = len(self._text)
