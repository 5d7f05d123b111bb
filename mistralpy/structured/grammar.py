"""One llguidance grammar per constraint kind, validated by llguidance itself (its message is the error's)."""

from __future__ import annotations

import json
import re
from typing import Any

import llguidance

from ..errors import InvalidRequestError
from .gbnf import lark_of

# Compact, bounded whitespace: with llguidance's default (free whitespace) a small model runs into long whitespace runs
# and spends its max_tokens there. One space after ',' and ':' reads like json.dumps.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# llguidance's error for JSON-schema keywords it does not implement (it never ignores one: `lenient` stays off)
_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*?)\]")


def grammar_of(kind: str, value: Any, label: str, whitespace_pattern: str | None = None) -> str:
    """The llguidance grammar (its JSON text) of one constraint; InvalidRequestError quoting llguidance on a bad one.
    `label` names the request field in messages; `whitespace_pattern` (JSON kinds) is the whitespace allowed between
    JSON's tokens, in place of the compact default."""
    try:
        grammar = _build(kind, value, whitespace_pattern)
    except ValueError as e:
        raise InvalidRequestError(f"Invalid {label}: {_one_line(str(e))}") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise InvalidRequestError(f"Invalid {label}: {_explained(messages[0])}")
    return grammar


def _build(kind: str, value: Any, whitespace_pattern: str | None) -> str:
    if kind in ("json", "json_object"):
        schema = value if kind == "json" else {"type": "object"}
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_json_options(whitespace_pattern))
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(value)
    if kind == "choice":
        # JSON string literals are Lark string literals: each choice matched exactly, as bytes
        return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value))
    if kind == "grammar":
        return llguidance.LLMatcher.grammar_from_lark(lark_of(value))
    if kind == "llguidance":
        return json.dumps(value)  # llguidance's own grammar object, as it is
    raise ValueError(f"unknown kind {kind!r}")


def _json_options(whitespace_pattern: str | None) -> dict[str, Any]:
    if whitespace_pattern is None:
        return JSON_OPTIONS
    # the pattern alone decides the whitespace around ',' and ':' (vLLM's and Outlines' meaning)
    return {"whitespace_flexible": False, "whitespace_pattern": whitespace_pattern}


def _explained(message: str) -> str:
    found = _UNIMPLEMENTED.search(message)
    if found is None:
        return _one_line(message)
    keys = ", ".join(json.dumps(k) for k in json.loads(f"[{found.group(1)}]"))
    return f"the schema uses {keys}, which llguidance does not implement ({_one_line(message)})"


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
