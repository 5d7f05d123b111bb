"""LoopThread: a private asyncio event loop on a daemon thread, so synchronous code can drive async APIs.

It works from plain scripts and from inside another running event loop (Jupyter, `asyncio.run`), where
`asyncio.run` would refuse: the coroutine runs on this thread's loop and the caller only waits for its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, Generic, TypeVar

from .engine.async_engine import EngineDeadError

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "mistralpy-runner") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:  # stopped: cancel what is left (no caller waits forever), finish suspended generators, close
            try:
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for it; an interrupt (Ctrl-C) while waiting cancels it."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a synchronous mistralpy call from the runner's own event loop would deadlock")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            raise EngineDeadError("the runner is closed") from None
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Schedule `coro` without waiting (safe from any thread, finalizers included); dropped once closed."""
        try:
            asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed
            coro.close()

    def iterate(self, chunks: AsyncIterator[T]) -> SyncIterator[T]:
        return SyncIterator(self, chunks)

    def stop(self) -> None:
        """Stop the loop and wait for its thread (callers finish their async work first)."""
        if threading.current_thread() is self._thread:
            self.loop.stop()
            return
        if not self.closed:
            self.submit(_stop(self.loop))
        self._thread.join()


class SyncIterator(Generic[T]):
    """A synchronous iterator over an async one that runs on a LoopThread. Closing it (`close()`, leaving a `with`
    block, or dropping it, as breaking out of `for chunk in ...` does) closes the async iterator."""

    def __init__(self, thread: LoopThread, chunks: AsyncIterator[T]) -> None:
        self._thread = thread
        self._chunks: AsyncIterator[T] | None = chunks

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._chunks is None:
            raise StopIteration
        try:
            more, item = self._thread.run(_next(self._chunks))
        except BaseException:
            self.close()
            raise
        if not more:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        chunks, self._chunks = self._chunks, None
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            self._thread.submit(aclose())

    def __enter__(self) -> SyncIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


async def _next(chunks: AsyncIterator[T]) -> tuple[bool, T | None]:
    try:
        return True, await chunks.__anext__()
    except StopAsyncIteration:
        return False, None


async def _stop(loop: asyncio.AbstractEventLoop) -> None:
    loop.stop()
