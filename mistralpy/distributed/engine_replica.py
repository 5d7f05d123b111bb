"""EngineReplica: one Ray Serve replica running the app `mistralpy serve` runs (its models, engines and routes),
driven through ASGI by hand: the ingress forwards each HTTP request and streams back the response's messages. The
app starts in the (async) constructor, so Ray counts the replica as started only once it can answer; a model that
fails to load fails the replica's start."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .forwarded import ForwardedRequest

REPLICA_HEADER = "x-mistralpy-replica"  # which replica answered (a response header)


class EngineReplica:
    async def __init__(self, args: argparse.Namespace) -> None:  # Ray Serve awaits an async constructor
        """The app built and started: its models loaded, engines running, MCP servers connected, before Ray counts
        the replica as started (none serves a 503 or a request without its tools)."""
        from ..server.server_app import server_app

        self.failure: BaseException | None = None
        self.app = server_app(args, self._failed)
        self.replica_id = _replica_id()
        self.models = self.app.state.models
        for slot in self.models.slots.values():
            self.models.attach(slot, slot.loader())
        self._stop = asyncio.Event()
        self._lifespan = await self._start()
        while not self.models.ready and self.failure is None:
            await asyncio.sleep(0.02)
        if self.failure is not None:
            raise RuntimeError(f"the replica did not start: {self.failure}")

    def _failed(self, error: BaseException) -> None:
        self.failure = error

    async def _start(self) -> asyncio.Task:
        """The app's lifespan, run until shutdown: its start-up starts the engines and connects the MCP servers."""
        started = asyncio.Event()
        messages = [{"type": "lifespan.startup"}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await self._stop.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup"):
                started.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        lifespan = asyncio.create_task(self.app(scope, receive, send))
        await started.wait()
        return lifespan

    async def check_health(self) -> None:
        """Ray Serve's health check: a model that failed (after start-up too) fails the replica."""
        if self.failure is not None:
            raise RuntimeError(f"the models did not load: {self.failure}")

    async def forward(self, request: ForwardedRequest) -> AsyncIterator[Any]:
        """The response to `request`: its start (status, headers), then its body's chunks as they come. The
        generator closed early (the client left) is a disconnect to the app: it aborts the request."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        gone = asyncio.Event()
        body = [{"type": "http.request", "body": request.body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if body:
                return body.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        task = asyncio.create_task(self.app(_scope(request), receive, queue.put))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    task.result()  # the app ended without a complete response: raise what it raised
                    return
                message = getter.result()
                if message["type"] == "http.response.start":
                    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
                    yield message["status"], [*headers, (REPLICA_HEADER, self.replica_id)]
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        yield message["body"]
                    if not message.get("more_body"):
                        return
        finally:
            gone.set()
            if not task.done():
                await asyncio.wait({task}, timeout=10)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait({self._lifespan}, timeout=30)


def _replica_id() -> str:
    from ray import serve

    return serve.get_replica_context().replica_id.unique_id


def _scope(request: ForwardedRequest) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
        "scheme": "http", "path": request.path, "raw_path": request.path.encode(), "root_path": "",
        "query_string": request.query, "headers": request.headers, "server": ("replica", 0),
        "client": ("ingress", 0), "state": {},
    }  # fmt: skip
