"""Hermes / Qwen tool calls: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per call
(Qwen2.5, Qwen3, Hermes 2 Pro / 3 templates)."""

from __future__ import annotations

import json

from .calls import call_from_json
from .tool_format import CallMatch, ToolFormat, decode_json_prefix, free_text_lexemes

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class HermesFormat(ToolFormat):
    name = "hermes"
    marker = OPEN

    @property
    def markers(self) -> tuple[str, ...]:
        return (OPEN, CLOSE)

    def take(self, text: str, final: bool) -> CallMatch | None:
        close = text.find(CLOSE, len(OPEN))
        if close < 0:
            if not final:
                return None
            # the output ended inside the block: a model that skips the closing tag, or half a call cut off by the
            # budget, which is dropped (finish_reason "length" says so) rather than shown as content
            decoded = decode_json_prefix(text[len(OPEN) :])
            call = call_from_json(decoded[0]) if decoded and not text[len(OPEN) + decoded[1] :].strip() else None
            return CallMatch([call] if call else [], len(text))
        try:
            call = call_from_json(json.loads(text[len(OPEN) : close]))
        except ValueError:
            call = None
        return CallMatch([call] if call else None, close + len(CLOSE))

    def grammar(self, body: str, parallel: bool, optional: bool) -> str:
        more = ' ("\\n" call)*' if parallel else ""
        rules = f'call: "<tool_call>\\n" {body} "\\n</tool_call>"\n'
        if not optional:
            return f"start: call{more}\n" + rules
        rest = f'rest: "\\n" {body} "\\n</tool_call>"{more}\n'
        return "start: TEXT | PRE rest\n" + rest + rules + free_text_lexemes(OPEN)
