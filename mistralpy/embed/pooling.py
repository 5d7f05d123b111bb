"""PoolingParams and pool(): a prompt's last hidden states -> one embedding vector.

Modes as sentence-transformers and llama.cpp name them: "mean" (the average of every token's state), "cls" (the first
token's), "last" (the last token's: a decoder's only state that has seen the whole prompt). `dimensions` keeps the
first dimensions of a Matryoshka model's vector; normalisation (unit L2 length) comes after it, as OpenAI's
`dimensions` returns unit vectors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidRequestError

POOLING_MODES = ("mean", "cls", "last")


@dataclass(frozen=True)
class PoolingParams:
    mode: str = "mean"
    normalize: bool = True
    dimensions: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise InvalidRequestError(f"unknown pooling {self.mode!r}; choose one of: {', '.join(POOLING_MODES)}")
        dims = self.dimensions
        if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
            raise InvalidRequestError(f"dimensions must be a positive integer, got {dims!r}")


def pool(hidden: torch.Tensor, params: PoolingParams) -> torch.Tensor:
    """hidden: (num_tokens, hidden_size), one prompt's final hidden states -> (dimensions or hidden_size,) float32."""
    states = hidden.float()
    if params.mode == "mean":
        vector = states.mean(0)
    elif params.mode == "cls":
        vector = states[0]
    else:
        vector = states[-1]
    if params.dimensions is not None:
        vector = vector[: params.dimensions]
    return F.normalize(vector, dim=0) if params.normalize else vector
