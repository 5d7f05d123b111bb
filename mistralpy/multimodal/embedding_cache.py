"""ImageEmbeddingCache: projected image embeddings by image hash, least recently used evicted: an image sent again
(the same picture in a follow-up turn, another request) is not encoded again."""

from __future__ import annotations

from collections import OrderedDict

import torch

DEFAULT_ENTRIES = 64  # Gemma 3: 256 x hidden floats an image (~2.6 MB at 2560 bf16)


class ImageEmbeddingCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, digest: bytes) -> torch.Tensor | None:
        embeds = self._entries.get(digest)
        if embeds is None:
            self.misses += 1
            return None
        self._entries.move_to_end(digest)
        self.hits += 1
        return embeds

    def put(self, digest: bytes, embeds: torch.Tensor) -> None:
        self._entries[digest] = embeds
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
