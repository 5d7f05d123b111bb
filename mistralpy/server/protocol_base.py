"""OpenAIModel: the base of every request model: unknown fields forbidden, types strict; built in Python, a bad field
raises InvalidRequestError."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import InvalidRequestError
from .validation import describe_validation_errors

# mistral.rs's Python request fields whose OpenAI names we use: pointed out rather than only rejected.
_MISTRALRS_NAMES = {"n_choices": "n", "stop_seqs": "stop", "echo_prompt": "echo"}


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    def __init__(self, /, **data: Any) -> None:
        """Python construction (the Runner's way in): a bad field raises InvalidRequestError, not ValidationError."""
        renamed = [f"'{k}' (use '{_MISTRALRS_NAMES[k]}')" for k in data if k in _MISTRALRS_NAMES]
        if renamed:
            raise InvalidRequestError(f"invalid {type(self).__name__}: unknown field {', '.join(renamed)}")
        try:
            super().__init__(**data)
        except ValidationError as e:
            message, _ = describe_validation_errors(list(e.errors()))
            raise InvalidRequestError(f"invalid {type(self).__name__}: {message}") from None

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """OpenAI's schema lets every optional field be null, meaning "not set", and clients send null wherever their
        caller passed None (the openai client, LangChain): a null for a field with a default is that default."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        unset = [k for k, v in data.items() if v is None and k in fields and not fields[k].is_required()]
        return {k: v for k, v in data.items() if k not in unset} if unset else data

    # Tell pydantic this is a plain validating __init__ (as RootModel does), so validation itself (the server's request
    # bodies, model_validate, nested models) never calls it: the HTTP edge keeps pydantic's errors and its 400s.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]
