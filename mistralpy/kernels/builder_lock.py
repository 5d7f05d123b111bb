"""One builder per build key: an flock on the build directory's builder.lock.

The kernel releases an flock when its holder dies, however it dies (SIGKILL, OOM), so this lock is never left
behind. torch's own lock is a file (its FileBaton: `build/lock`, created for a build and removed after) that a
killed build leaves in place, and torch's loader then waits for it forever. Whoever holds our lock knows that no
other builder of the key is alive, so a baton it finds is a dead build's, and it removes it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class BuilderLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, wait: bool, patience_s: float = 0.0) -> bool:
        """Take the lock: waiting for it (wait), or trying for up to patience_s seconds; False if another holds it."""
        import fcntl  # POSIX only, as the kernels are (kernels.enabled)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + patience_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> BuilderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def build_running(path: Path) -> bool:
    """Whether a builder holds the lock at `path` now."""
    if not path.exists():
        return False
    probe = BuilderLock(path)
    if probe.acquire(wait=False):
        probe.release()
        return False
    return True


def clear_stale_baton(baton: Path, lock: BuilderLock) -> bool:
    """Remove torch's baton left by a killed build; only the holder of the builder lock may call this."""
    if not lock.held:
        raise RuntimeError("clear_stale_baton needs the builder lock held")
    if not baton.exists():
        return False
    age = time.time() - baton.stat().st_mtime
    logger.warning("removing %s, left %.0f s ago by a build that did not finish", baton, age)
    baton.unlink(missing_ok=True)
    return True
