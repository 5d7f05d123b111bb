"""StepImages: what a model step needs of its requests' images: the rows of the step's tokens that are image tokens,
and the embeddings that replace their token embeddings there."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepImages:
    token_index: torch.Tensor  # (K,) long: positions in the step's flattened tokens
    embeds: torch.Tensor  # (K, hidden): the image embeddings for those rows, in order

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """The step's input embeddings with the image rows replaced."""
        x = x.clone()
        x[self.token_index] = self.embeds.to(x.dtype)
        return x
