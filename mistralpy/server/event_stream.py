"""A chat chunk stream re-told as another API's server-sent events (Anthropic's Messages, OpenAI's Responses): the
translator's opening events, its events for each chunk, then its closing ones, or its failure events for an error
raised after the 200 header went out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from ..errors import MistralpyError
from .responses import ChatCompletionChunk
from .streaming import ChunkStream

logger = logging.getLogger(__name__)


class EventTranslator(Protocol):
    def start(self) -> list[str]: ...
    def of_chunk(self, chunk: ChatCompletionChunk) -> list[str]: ...
    def end(self) -> list[str]: ...
    def fail(self, error: BaseException) -> list[str]: ...


async def translated_events(chunks: ChunkStream[ChatCompletionChunk], events: EventTranslator) -> AsyncIterator[str]:
    for e in events.start():
        yield e
    try:
        async for chunk in chunks:
            for e in events.of_chunk(chunk):
                yield e
    except Exception as error:
        if not isinstance(error, MistralpyError):
            logger.error("generation failed", exc_info=error)
        for e in events.fail(error):
            yield e
        return
    for e in events.end():
        yield e
