"""StructuredOutputsParams: vLLM's structured_outputs fields (plus `llguidance`, a raw llguidance grammar, as
mistral.rs takes it); exactly one kind of constraint, checked by llguidance at construction, and turned into one
llguidance grammar."""

from __future__ import annotations

import json
from dataclasses import InitVar, dataclass
from typing import Any

from ..errors import InvalidRequestError
from .grammar import grammar_of

_KINDS = ("json", "regex", "choice", "grammar", "json_object", "llguidance")
_JSON_KINDS = ("json", "json_object")


@dataclass
class StructuredOutputsParams:
    json: dict[str, Any] | str | None = None  # a JSON schema (a dict or its text)
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None  # Lark (llguidance's dialect) or GBNF (llama.cpp's), converted by llguidance
    json_object: bool | None = None  # any JSON object
    llguidance: dict[str, Any] | str | None = None  # llguidance's grammar object ({"grammars": [...]}) or its text
    whitespace_pattern: str | None = None  # JSON kinds: a regex for the whitespace between JSON's tokens
    # the request field the constraint came from, for messages (default: structured_outputs.<kind>)
    source: InitVar[str | None] = None

    def __post_init__(self, source: str | None) -> None:
        set_kinds = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(set_kinds) != 1:
            found = ", ".join(set_kinds) or "none"
            raise InvalidRequestError(f"structured_outputs must set exactly one of {', '.join(_KINDS)}; found {found}")
        self.label = label = source or f"structured_outputs.{self.kind}"
        self._check_types(label)
        self.llguidance_grammar = grammar_of(self.kind, self.spec_value, label, self.whitespace_pattern)

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))

    @property
    def spec_value(self) -> Any:
        return getattr(self, self.kind)

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the grammar: the compile cache's key."""
        return (self.kind, self.llguidance_grammar)

    def _check_types(self, label: str) -> None:
        for name in ("json", "llguidance"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (dict, str)):
                _fail(label, "must be an object or its JSON text", value)
            if isinstance(value, str):
                try:
                    setattr(self, name, _loads_object(value))
                except ValueError as e:
                    _fail(label, f"is not a JSON object ({e})", value)
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                _fail(label, "must be a non-empty string", value)
        if self.choice is not None:
            ok = isinstance(self.choice, (list, tuple)) and self.choice and all(isinstance(c, str) for c in self.choice)
            if not ok or any(c == "" for c in self.choice):
                _fail(label, "must be a non-empty list of non-empty strings", self.choice)
            self.choice = list(self.choice)
        if self.json_object is not None and not isinstance(self.json_object, bool):
            _fail(label, "must be true or false", self.json_object)
        if self.whitespace_pattern is not None:
            if not isinstance(self.whitespace_pattern, str) or not self.whitespace_pattern:
                _fail("whitespace_pattern", "must be a non-empty string", self.whitespace_pattern)
            if self.kind not in _JSON_KINDS:
                raise InvalidRequestError(f"whitespace_pattern applies to JSON output only, not to {label}")


def _loads_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"a {type(value).__name__}")
    return value


def _fail(label: str, rule: str, value: Any) -> None:
    shown = repr(value)
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    raise InvalidRequestError(f"Invalid {label}: {rule}, got {shown}")
