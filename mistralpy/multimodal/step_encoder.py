"""StepEncoder: the model runner's part of images: before a step, the embeddings of the images its prefill chunks
cover (encoded once per request, in one batch per step, or found in the cache by hash), as one StepImages."""

from __future__ import annotations

import torch

from .embedding_cache import ImageEmbeddingCache
from .request_images import RequestImages
from .step_images import StepImages


class StepEncoder:
    def __init__(self, model: torch.nn.Module, cache: ImageEmbeddingCache | None = None) -> None:
        self.model = model
        self.cache = cache if cache is not None else ImageEmbeddingCache()

    def step_images(self, chunks: list[tuple[RequestImages | None, int, int]]) -> StepImages | None:
        """chunks: (a request's images, its chunk's start, its number of tokens), in the step's token order."""
        self._encode(
            [images for images, start, n in chunks if images is not None and images.overlapping(start, start + n)]
        )
        index, rows, offset = [], [], 0
        for images, start, n in chunks:
            for i in [] if images is None else images.overlapping(start, start + n):
                a, b = images.ranges[i]
                lo, hi = max(a, start), min(b, start + n)
                index.append(torch.arange(offset + lo - start, offset + hi - start))
                rows.append(images.embeds[i][lo - a : hi - a])
            offset += n
        if not index:
            return None
        return StepImages(torch.cat(index), torch.cat(rows))

    def _encode(self, requests: list[RequestImages]) -> None:
        todo: dict[bytes, list[tuple[RequestImages, int]]] = {}
        for images in requests:
            for i, image in enumerate(images.images):
                if images.embeds[i] is None:
                    cached = self.cache.get(image.digest)
                    if cached is not None:
                        images.embeds[i] = cached
                    else:
                        todo.setdefault(image.digest, []).append((images, i))
        if not todo:
            return
        pixels = torch.stack([uses[0][0].images[uses[0][1]].pixels for uses in todo.values()])
        for (digest, uses), embeds in zip(todo.items(), self.model.encode_images(pixels), strict=True):
            self.cache.put(digest, embeds)
            for images, i in uses:
                images.embeds[i] = embeds
