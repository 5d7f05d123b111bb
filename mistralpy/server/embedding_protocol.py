"""OpenAI's /v1/embeddings request and response models."""

from __future__ import annotations

import base64
from typing import Any, Literal

import torch
from pydantic import BaseModel, field_validator

from .protocol_base import OpenAIModel


def _ids(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


class EmbeddingRequest(OpenAIModel):
    """`input`: a string, a list of strings, a list of token ids or a list of token-id lists, none empty."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = None  # None: float
    dimensions: int | None = None  # a Matryoshka model's shorter vectors; others refuse it
    user: str | None = None  # OpenAI's end-user id: accepted, as it only labels the request

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value: Any) -> Any:
        if isinstance(value, str) and value or _ids(value):
            return value
        if (
            isinstance(value, list)
            and value
            and (all(isinstance(p, str) and p for p in value) or all(map(_ids, value)))
        ):
            return value
        raise ValueError(
            "must be a non-empty string, a list of non-empty strings, a list of token ids or a list of token-id lists"
        )

    def inputs(self) -> list[str | list[int]]:
        if isinstance(self.input, str) or isinstance(self.input[0], int):
            return [self.input]
        return list(self.input)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int

    @classmethod
    def of(cls, index: int, vector: list[float], encoding_format: str | None) -> EmbeddingData:
        if encoding_format == "base64":  # OpenAI's: the float32 values' little-endian bytes
            data = torch.tensor(vector, dtype=torch.float32).numpy().astype("<f4").tobytes()
            return cls(embedding=base64.b64encode(data).decode("ascii"), index=index)
        return cls(embedding=vector, index=index)


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
