"""A watch on the worker processes: one that exits while the engine runs is logged at once, and `mistralpy serve`
(which asks for it: stop_server_on_worker_death) is sent SIGTERM, so that it ends with that error rather than staying
up with an engine that can only fail. Any other process is left alone: its next step raises TensorParallelError
(launch.py)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from multiprocessing.connection import wait

logger = logging.getLogger(__name__)
_stop_server = threading.Event()


def stop_server_on_worker_death() -> None:
    """`mistralpy serve`'s process: a dead worker stops it (SIGTERM: uvicorn's graceful shutdown)."""
    _stop_server.set()


def watch_workers(workers: list, closing: threading.Event) -> None:
    ended = wait([w.sentinel for w in workers])
    if closing.is_set():
        return
    for rank, w in enumerate(workers, start=1):
        if w.sentinel not in ended:
            continue
        w.join(timeout=5)  # its sentinel closes a moment before its exit status can be read
        logger.error("tensor-parallel worker rank %d (pid %s) exited with code %s", rank, w.pid, w.exitcode)
    if _stop_server.is_set():
        logger.error("a tensor-parallel worker is gone: stopping the server")
        os.kill(os.getpid(), signal.SIGTERM)
