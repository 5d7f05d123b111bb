"""ToolCall: one parsed call as OpenAI returns it (id, function name, arguments as a JSON string)."""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object's text, as OpenAI's function.arguments

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ParsedCall:
    """A call read from the model's text, before it gets its id."""

    name: str
    arguments: dict[str, Any]

    def arguments_text(self) -> str:
        # one spelling for the streamed fragments and the whole message alike
        return json.dumps(self.arguments, ensure_ascii=False)


def call_from_json(value: Any, arguments_key: str = "arguments") -> ParsedCall | None:
    """{"name": ..., <arguments_key>: {...}} -> ParsedCall; None when the value is not a call."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get(arguments_key, value.get("arguments", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return ParsedCall(value["name"], arguments) if isinstance(arguments, dict) else None


def new_call_id(alphanumeric9: bool = False) -> str:
    """A fresh id; Mistral's templates accept only 9 letters or digits."""
    if alphanumeric9:
        return "".join(secrets.choice(_ALNUM) for _ in range(9))
    return f"call_{secrets.token_hex(12)}"
