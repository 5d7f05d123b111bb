"""RequestImages: one request's images in its prompt: each image's pixels and hash, the positions of its image
tokens, and its embeddings once computed (kept across preemption: a recomputed prompt does not encode again).

An image's tokens attend to each other both ways, so a prefill chunk never ends inside an image's run of tokens:
`fit_chunk` moves the end before the image, or past it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageInput:
    pixels: torch.Tensor  # (3, S, S) float32, as the vision tower takes it
    digest: bytes  # preprocess.image_hash of the pixels


@dataclass
class RequestImages:
    images: list[ImageInput]
    ranges: list[tuple[int, int]]  # [start, end) of each image's image tokens in the prompt
    embeds: list[torch.Tensor | None] = field(default_factory=list)  # (tokens, hidden) each, once encoded

    def __post_init__(self) -> None:
        if not self.embeds:
            self.embeds = [None] * len(self.images)

    def overlapping(self, start: int, end: int) -> list[int]:
        """The images with tokens in [start, end)."""
        return [i for i, (a, b) in enumerate(self.ranges) if a < end and start < b]

    def block_salt(self, start: int, end: int) -> bytes:
        """What the prefix-cache key of the block over [start, end) adds to its tokens: its images' hashes."""
        return b"".join(self.images[i].digest for i in self.overlapping(start, end))

    def bidirectional(self, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """The parts of images inside a chunk [start, end): their tokens see each other both ways."""
        return tuple((max(a, start), min(b, end)) for a, b in (self.ranges[i] for i in self.overlapping(start, end)))

    def fit_chunk(self, start: int, num_new: int, budget: int) -> int:
        """num_new, cut so that the chunk [start, start + num_new) does not end inside an image: before the image
        where the chunk starts before it, else past its end if the budget allows; 0 when neither (next step)."""
        end = start + num_new
        for a, b in self.ranges:
            if a < end < b:
                if a > start:
                    return a - start
                return b - start if b - start <= budget else 0
        return num_new
