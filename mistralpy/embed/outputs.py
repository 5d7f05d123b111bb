"""What LLM.embed and the engine return for an embedding request, shaped like vLLM's EmbeddingRequestOutput."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EmbeddingOutput:
    embedding: list[float]

    @property
    def hidden_size(self) -> int:
        return len(self.embedding)


@dataclass
class EmbeddingRequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: EmbeddingOutput
    finished: bool = True  # an embedding is made in one step

    @classmethod
    def of(cls, request_id: str, prompt_token_ids: list[int], vector: torch.Tensor) -> EmbeddingRequestOutput:
        return cls(request_id, prompt_token_ids, EmbeddingOutput(vector.tolist()))
