"""RemoteRanks: rank 0's view of worker ranks it did not start (torchrun started them, on this node or others): each
is watched by a thread that waits on its liveness link (group.py), which its process's end closes. A rank seen gone
fails the next step at once and, in `mistralpy serve`, stops the server (watcher.py)."""

from __future__ import annotations

import threading

from .group import TensorParallelError, TPGroup
from .watcher import report_gone


class RemoteRanks:
    def __init__(self, group: TPGroup, closing: threading.Event) -> None:
        self.group, self.closing = group, closing
        self.gone: dict[int, str] = {}
        self._threads = [
            threading.Thread(target=self._watch, args=(rank,), daemon=True, name=f"tp-rank-{rank}-watch")
            for rank in range(1, group.size)
        ]
        for t in self._threads:
            t.start()

    def _watch(self, rank: int) -> None:
        try:
            self.group.wait_for_exit(rank)
            reason = "it closed its link"
        except TensorParallelError as e:
            reason = str(e.__cause__ or e).splitlines()[0]
        self.gone[rank] = reason
        if not self.closing.is_set():
            report_gone(f"tensor-parallel rank {rank} (started by torchrun) is gone: {reason}")

    def all_alive(self) -> bool:
        return not self.gone

    def check(self) -> None:
        for rank, reason in self.gone.items():
            raise TensorParallelError(
                f"tensor-parallel rank {rank} (started by torchrun) is gone ({reason}); this engine cannot run "
                "another step"
            )

    def join(self, timeout: float) -> None:
        """After the stop command: the ranks' exits end the watches."""
        for t in self._threads:
            t.join(timeout)
