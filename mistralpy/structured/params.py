"""StructuredOutputsParams: vLLM's structured_outputs fields; exactly one kind of constraint, checked by llguidance at
construction, and turned into one llguidance grammar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from .grammar import grammar_of

_KINDS = ("json", "regex", "choice", "grammar", "json_object")


@dataclass
class StructuredOutputsParams:
    json: dict[str, Any] | str | None = None  # a JSON schema (a dict or its text)
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None  # Lark (llguidance's dialect)
    json_object: bool | None = None  # any JSON object

    def __post_init__(self) -> None:
        set_kinds = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(set_kinds) != 1:
            found = ", ".join(set_kinds) or "none"
            raise InvalidRequestError(f"structured_outputs must set exactly one of {', '.join(_KINDS)}; found {found}")
        self._check_types()
        self.llguidance_grammar = grammar_of(self.kind, self.spec_value)

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

    def _check_types(self) -> None:
        if self.json is not None and not isinstance(self.json, (dict, str)):
            _fail("json", "must be a JSON schema (an object or its text)", self.json)
        if isinstance(self.json, str):
            try:
                self.json = _loads_object(self.json)
            except ValueError as e:
                _fail("json", f"is not a JSON object ({e})", self.json)
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                _fail(name, "must be a non-empty string", value)
        if self.choice is not None:
            ok = isinstance(self.choice, (list, tuple)) and self.choice and all(isinstance(c, str) for c in self.choice)
            if not ok or any(c == "" for c in self.choice):
                _fail("choice", "must be a non-empty list of non-empty strings", self.choice)
            self.choice = list(self.choice)
        if self.json_object is not None and not isinstance(self.json_object, bool):
            _fail("json_object", "must be true or false", self.json_object)


def _loads_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"a {type(value).__name__}")
    return value


def _fail(name: str, rule: str, value: Any) -> None:
    shown = repr(value)
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    raise InvalidRequestError(f"Invalid structured_outputs.{name}: {rule}, got {shown}")
