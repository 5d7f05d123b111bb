"""The request fields that constrain output, in every client's dialect, mapped onto one StructuredOutputsParams:
OpenAI's `response_format`; vLLM's `structured_outputs` and its legacy `guided_*` fields; mistral.rs's `grammar`
object ({"type", "value"}; its Python requests: `grammar` text with `grammar_type`); llama.cpp's `json_schema` and
`grammar` (GBNF text). At most one of them per request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import InvalidRequestError
from ..structured.params import StructuredOutputsParams
from .protocol_base import OpenAIModel

# vLLM's legacy fields -> StructuredOutputsParams' kinds
_GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar"}
# mistral.rs's grammar types -> StructuredOutputsParams' kinds
_MISTRALRS = {"regex": "regex", "json_schema": "json", "lark": "grammar", "llguidance": "llguidance"}
# vLLM's names of the llguidance backend, the one mistralpy has
_BACKENDS = ("guidance", "llguidance")


class JsonSchemaFormat(OpenAIModel):
    name: str = Field(min_length=1)
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None  # the output always follows the schema, strict or not


class ResponseFormat(OpenAIModel):
    """OpenAI's `response_format`: free text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and allowed only with it")
        return self


class StructuredOutputsField(OpenAIModel):
    """vLLM's `structured_outputs` body field (its other options are refused as unknown fields)."""

    json_spec: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    whitespace_pattern: str | None = None


class GrammarObject(OpenAIModel):
    """mistral.rs's `grammar`: a regex, a JSON schema, a Lark grammar or llguidance's own grammar object."""

    type: Literal["regex", "json_schema", "lark", "llguidance"]
    value: str | dict[str, Any]


class StructuredFields(OpenAIModel):
    """The request models' fields that constrain the output (chat and text completions alike)."""

    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsField | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: str | None = None
    guided_whitespace_pattern: str | None = None
    # mistral.rs's object; or text: llama.cpp's GBNF, or (with grammar_type) mistral.rs's Python requests' form
    grammar: GrammarObject | str | None = None
    grammar_type: Literal["regex", "json_schema", "lark", "llguidance"] | None = None
    json_schema: dict[str, Any] | None = None  # llama.cpp's

    @model_validator(mode="after")
    def _grammar_type_needs_text(self) -> StructuredFields:
        if self.grammar_type is not None and not isinstance(self.grammar, str):
            raise ValueError("grammar_type needs grammar as text (mistral.rs's Python form)")
        return self

    @property
    def constrains_output(self) -> bool:
        """Whether the request asks for a constraint (then structured_spec() compiles: keep it off the event loop)."""
        return bool(self._constraints()) or self.guided_whitespace_pattern is not None

    def structured_spec(self) -> StructuredOutputsParams | None:
        """The one constraint the request asks for, or None; InvalidRequestError (a 400) for a bad or doubled one."""
        backend = self.guided_decoding_backend
        if backend is not None and backend not in _BACKENDS:
            raise InvalidRequestError(
                f"guided_decoding_backend {backend!r} is not available: mistralpy decodes with llguidance "
                f"(give 'guidance' or 'llguidance', or leave it out)"
            )
        found = self._constraints()
        if len(found) > 1:
            raise InvalidRequestError(f"{' and '.join(found)} each constrain the output: set one, not both")
        if not found:
            if self.guided_whitespace_pattern is not None:
                raise InvalidRequestError("guided_whitespace_pattern applies to JSON output; the request asks for none")
            return None
        [(name, (source, kwargs))] = found.items()
        if self.guided_whitespace_pattern is not None:
            if kwargs.get("whitespace_pattern") is not None:
                raise InvalidRequestError("set structured_outputs.whitespace_pattern or guided_whitespace_pattern")
            kwargs["whitespace_pattern"] = self.guided_whitespace_pattern
        return StructuredOutputsParams(**kwargs, source=source)

    def _constraints(self) -> dict[str, tuple[str | None, dict[str, Any]]]:
        """Each field that constrains the output -> (its name in messages, StructuredOutputsParams' arguments)."""
        found: dict[str, tuple[str | None, dict[str, Any]]] = {}
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_object":
            found["response_format"] = ("response_format", {"json_object": True})
        elif fmt is not None and fmt.type == "json_schema":
            found["response_format"] = ("response_format.json_schema.schema", {"json": fmt.json_schema.json_schema})
        if self.structured_outputs is not None:
            kwargs = self.structured_outputs.model_dump(exclude_none=True)
            if "json_spec" in kwargs:
                kwargs["json"] = kwargs.pop("json_spec")
            found["structured_outputs"] = (None, kwargs)
        for name, kind in _GUIDED.items():
            if getattr(self, name) is not None:
                found[name] = (name, {kind: getattr(self, name)})
        if self.grammar is not None:
            found["grammar"] = self._grammar()
        if self.json_schema is not None:
            found["json_schema"] = ("json_schema", {"json": self.json_schema})
        return found

    def _grammar(self) -> tuple[str, dict[str, Any]]:
        if isinstance(self.grammar, str) and self.grammar_type is None:
            return "grammar", {"grammar": self.grammar}  # llama.cpp's GBNF (or Lark starting with %llguidance)
        if isinstance(self.grammar, GrammarObject):
            kind, value, label = self.grammar.type, self.grammar.value, "grammar.value"
        else:
            kind, value, label = self.grammar_type, self.grammar, "grammar"
        if kind in ("regex", "lark") and not isinstance(value, str):
            raise InvalidRequestError(f"Invalid {label}: a {kind} grammar must be a string")
        return f"{label} ({kind})", {_MISTRALRS[kind]: value}
