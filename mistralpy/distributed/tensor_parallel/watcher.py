"""A watch on the worker ranks: one that exits while the engine runs is logged at once, and `mistralpy serve` (which
asks for it: stop_server_on_worker_death) is sent SIGTERM, so that it ends with that error (`rank_failure`: its exit
status) rather than staying up with an engine that can only fail. Any other process is left alone: its next step
raises TensorParallelError (launch.py). Spawned workers are watched through their process sentinels, ranks that
torchrun started (on any node) through their liveness links (remote_ranks.py)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import wait

logger = logging.getLogger(__name__)
_stop_server = threading.Event()
_failures: list[str] = []


def stop_server_on_worker_death() -> None:
    """`mistralpy serve`'s process: a dead worker stops it (SIGTERM: uvicorn's graceful shutdown)."""
    _stop_server.set()


def rank_failure() -> str | None:
    """The first worker rank's end seen while its engine ran, as logged; None if none."""
    return _failures[0] if _failures else None


def report_gone(message: str) -> None:
    logger.error("%s", message)
    _failures.append(message)
    if _stop_server.is_set():
        logger.error("a tensor-parallel worker is gone: stopping the server")
        os.kill(os.getpid(), signal.SIGTERM)


def has_exited(worker) -> bool:
    """A spawned worker's end: its sentinel closes a moment before its exit status can be read (is_alive() can still
    say True then)."""
    return not worker.is_alive() or bool(wait([worker.sentinel], 0))


def exit_code(worker, within_s: float = 5.0) -> int | None:
    """An exited worker's exit code, once the OS has it."""
    deadline = time.monotonic() + within_s
    while worker.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker.exitcode


def watch_workers(workers: list, closing: threading.Event) -> None:
    ended = wait([w.sentinel for w in workers])
    if closing.is_set():
        return
    gone = [(rank, w) for rank, w in enumerate(workers, start=1) if w.sentinel in ended]
    report_gone(
        "; ".join(
            f"tensor-parallel worker rank {rank} (pid {w.pid}) exited with code {exit_code(w)}" for rank, w in gone
        )
    )
