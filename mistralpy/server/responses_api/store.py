"""ResponseStore: the stored responses (store: true) by id, for GET, DELETE, previous_response_id and background
runs; bounded in count and age (the oldest dropped first). Used from the event loop's thread only."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

# A chat server's recent conversations, not an archive: enough to continue them, bounded in memory.
MAX_RESPONSES = 1024
TTL_SECONDS = 3600.0


@dataclass
class Stored:
    response: dict[str, Any]  # the Response object as last sent
    messages: list[dict[str, Any]]  # the conversation up to and including this response's output (chat messages)
    stored_at: float = field(default_factory=time.monotonic)
    task: asyncio.Task | None = None  # a background response still running


class ResponseStore:
    def __init__(self, max_responses: int = MAX_RESPONSES, ttl_seconds: float = TTL_SECONDS) -> None:
        self.max_responses, self.ttl_seconds = max_responses, ttl_seconds
        self._items: OrderedDict[str, Stored] = OrderedDict()

    def put(self, stored: Stored) -> None:
        self._expire()
        self._items[stored.response["id"]] = stored
        self._items.move_to_end(stored.response["id"])
        while len(self._items) > self.max_responses:
            _, dropped = self._items.popitem(last=False)
            if dropped.task is not None:
                dropped.task.cancel()

    def get(self, response_id: str) -> Stored | None:
        self._expire()
        return self._items.get(response_id)

    def delete(self, response_id: str) -> Stored | None:
        return self._items.pop(response_id, None)

    def _expire(self) -> None:
        limit = time.monotonic() - self.ttl_seconds
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.stored_at >= limit or oldest.task is not None and not oldest.task.done():
                return
            self._items.popitem(last=False)
