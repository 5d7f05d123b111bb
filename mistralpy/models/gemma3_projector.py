"""Gemma 3's multimodal projector: the vision tower's patch grid average-pooled to mm_tokens_per_image tokens (a
square grid), each normalised by a (1 + w) RMSNorm and projected into the language model's hidden size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError
from ..layers.norm import GemmaRMSNorm


def pooling_kernel(patches_per_side: int, tokens_per_image: int) -> int:
    side = math.isqrt(tokens_per_image)
    if side * side != tokens_per_image or side < 1 or patches_per_side % side:
        raise ModelLoadError(
            f"mm_tokens_per_image ({tokens_per_image}) must be a square whose side divides the {patches_per_side} "
            "patches per side of the vision tower"
        )
    return patches_per_side // side


class Gemma3Projector(nn.Module):
    def __init__(self, vision_hidden: int, text_hidden: int, eps: float, patches_per_side: int, tokens: int) -> None:
        super().__init__()
        self.mm_input_projection_weight = nn.Parameter(torch.empty(vision_hidden, text_hidden), requires_grad=False)
        self.mm_soft_emb_norm = GemmaRMSNorm(vision_hidden, eps)
        self.patches_per_side = patches_per_side
        self.kernel = pooling_kernel(patches_per_side, tokens)

    def forward(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, patches, vision hidden) -> (B, mm_tokens_per_image, text hidden)."""
        b, _, hidden = vision.shape
        side = self.patches_per_side
        grid = vision.transpose(1, 2).reshape(b, hidden, side, side)
        pooled = F.avg_pool2d(grid, self.kernel, self.kernel).flatten(2).transpose(1, 2)
        return (self.mm_soft_emb_norm(pooled) @ self.mm_input_projection_weight).to(vision.dtype)
