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


def watch_workers(workers: list, closing: threading.Event) -> None:
    ended = wait([w.sentinel for w in workers])
    if closing.is_set():
        return
    for w in workers:
        if w.sentinel in ended:
            w.join(timeout=5)  # its sentinel closes a moment before its exit status can be read
    gone = [(rank, w) for rank, w in enumerate(workers, start=1) if w.sentinel in ended]
    report_gone(
        "; ".join(f"tensor-parallel worker rank {rank} (pid {w.pid}) exited with code {w.exitcode}" for rank, w in gone)
    )
