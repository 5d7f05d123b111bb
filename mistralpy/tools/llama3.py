"""Llama 3.1+ tool calls: the whole answer is `{"name": ..., "parameters": {...}}` (optionally after
`<|python_tag|>`; several calls separated by "; "), as Meta's templates ask for custom tools."""

from __future__ import annotations

from .calls import ParsedCall, call_from_json
from .tool_format import CallMatch, ToolFormat, decode_json_prefix

PYTHON_TAG = "<|python_tag|>"


class Llama3Format(ToolFormat):
    name = "llama3"
    marker = PYTHON_TAG
    arguments_key = "parameters"

    def find_start(self, text: str, at_start: bool) -> int | None:
        stripped = text.lstrip()
        if at_start and (stripped.startswith("{") or stripped.startswith(PYTHON_TAG)):
            return len(text) - len(stripped)
        return None

    def hold_back(self, text: str, at_start: bool) -> int:
        stripped = text.lstrip()
        return len(text) if at_start and PYTHON_TAG.startswith(stripped) else 0

    def take(self, text: str, final: bool) -> CallMatch | None:
        if not final:
            return None  # the calls are the whole answer: read at its end
        rest = text.lstrip().removeprefix(PYTHON_TAG)
        calls: list[ParsedCall] = []
        while rest.strip():
            decoded = decode_json_prefix(rest)
            call = call_from_json(decoded[0], self.arguments_key) if decoded else None
            if call is None:
                return CallMatch(None, len(text))
            calls.append(call)
            rest = rest[decoded[1] :].lstrip()
            if rest and not rest.startswith(";"):
                return CallMatch(None, len(text))
            rest = rest[1:]
        return CallMatch(calls or None, len(text))

    def grammar(self, body: str, parallel: bool, optional: bool) -> str:
        more = f' ("; " {body})*' if parallel else ""
        calls = f"calls: {body}{more}\n"
        if not optional:
            return "start: calls\n" + calls
        # text that does not start like a call, or the calls
        return "start: TEXT | calls\n" + calls + "TEXT: /(.|\\n)+/ & ~/\\s*(\\{|<\\|python_tag\\|>)(.|\\n)*/\n"
