"""ShutdownServer: uvicorn's Server whose shutdown (on SIGINT / SIGTERM) ends every open request on time.

As vLLM's --shutdown-timeout: requests in flight get `drain_s` seconds to finish (0, the default: none), then the
engine stops and each request still open ends with an error: a stream with an error event (OpenAI's error body)
and `data: [DONE]`, any other request with a 503. Nothing is left for uvicorn to cut, so the process exits promptly.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import uvicorn

# uvicorn's own timeout, after the drain: only reached if a request ignores the engine's stop.
BACKSTOP_S = 3.0


class ShutdownServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stop_requests: Callable[[], Awaitable[None]], drain_s: float) -> None:
        config.timeout_graceful_shutdown = drain_s + BACKSTOP_S
        super().__init__(config)
        self._stop_requests = stop_requests
        self._drain_s = drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown (stop accepting, wait for open requests, lifespan shutdown), with the requests still
        open after the drain stopped meanwhile."""
        cut = asyncio.create_task(self._cut())
        try:
            await super().shutdown(sockets)
        finally:
            cut.cancel()

    async def _cut(self) -> None:
        await asyncio.sleep(self._drain_s)
        await self._stop_requests()
