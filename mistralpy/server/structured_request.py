"""The request fields that constrain output, in OpenAI's dialect (`response_format`) and vLLM's (`structured_outputs`),
mapped onto one StructuredOutputsParams."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import InvalidRequestError
from ..structured.params import StructuredOutputsParams
from .protocol_base import OpenAIModel


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


def structured_spec(
    response_format: ResponseFormat | None, structured_outputs: StructuredOutputsField | None
) -> StructuredOutputsParams | None:
    """The one constraint a request asks for, or None; InvalidRequestError (a 400) for a bad or doubled one."""
    constrained_format = response_format is not None and response_format.type != "text"
    if constrained_format and structured_outputs is not None:
        raise InvalidRequestError("set response_format or structured_outputs, not both")
    if structured_outputs is not None:
        fields = structured_outputs.model_dump(exclude_none=True)
        if "json_spec" in fields:
            fields["json"] = fields.pop("json_spec")
        return StructuredOutputsParams(**fields)
    if not constrained_format:
        return None
    if response_format.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    return StructuredOutputsParams(json=response_format.json_schema.json_schema)
