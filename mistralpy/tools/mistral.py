"""Mistral tool calls: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (Mistral 7B v0.3, Nemo, Small); the
templates want call ids of 9 letters or digits."""

from __future__ import annotations

from .calls import call_from_json
from .tool_format import CallMatch, ToolFormat, decode_json_prefix, free_text_lexemes

MARKER = "[TOOL_CALLS]"


class MistralFormat(ToolFormat):
    name = "mistral"
    marker = MARKER
    short_ids = True

    def take(self, text: str, final: bool) -> CallMatch | None:
        decoded = decode_json_prefix(text[len(MARKER) :])
        if decoded is None:  # at the end: half a call cut off by the budget, dropped rather than shown as content
            return CallMatch([], len(text)) if final else None
        value, end = decoded
        items = value if isinstance(value, list) else [value]
        calls = [call_from_json(item) for item in items]
        ok = bool(calls) and all(calls)
        return CallMatch(calls if ok else None, len(MARKER) + end)

    def grammar(self, body: str, parallel: bool, optional: bool) -> str:
        more = f' (", " {body})*' if parallel else ""
        array = f'array: "[" {body}{more} "]"\n'
        if not optional:
            return 'start: "[TOOL_CALLS]" array\n' + array
        return "start: TEXT | PRE array\n" + array + free_text_lexemes(MARKER)
