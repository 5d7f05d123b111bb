"""One llguidance grammar per constraint kind, validated by llguidance itself (its message is the error's)."""

from __future__ import annotations

import json
from typing import Any

import llguidance

from ..errors import InvalidRequestError

# Compact, bounded whitespace: with llguidance's default (free whitespace) a small model runs into long whitespace runs
# and spends its max_tokens there. One space after ',' and ':' reads like json.dumps.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def grammar_of(kind: str, value: Any) -> str:
    """The llguidance grammar (its JSON text) of one constraint; InvalidRequestError quoting llguidance on a bad one."""
    try:
        grammar = _build(kind, value)
    except ValueError as e:
        raise InvalidRequestError(f"Invalid structured_outputs.{kind}: {e}") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise InvalidRequestError(f"Invalid structured_outputs.{kind}: {_one_line(messages[0])}")
    return grammar


def _build(kind: str, value: Any) -> str:
    if kind == "json":
        return llguidance.LLMatcher.grammar_from_json_schema(value, overrides=JSON_OPTIONS)
    if kind == "json_object":
        return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=JSON_OPTIONS)
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(value)
    if kind == "choice":
        # JSON string literals are Lark string literals: each choice matched exactly, as bytes
        return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value))
    if kind == "grammar":
        return llguidance.LLMatcher.grammar_from_lark(value)
    raise ValueError(f"unknown kind {kind!r}")


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
