"""How many CPU threads torch and the native kernels use, when other processes may be taking the cores.

Every parallel op (torch's, and the native kernels', which run on torch's OpenMP threads) ends in a barrier, so it
is as slow as its slowest thread: when another process holds a core, the thread on it waits for a time slice while
the others spin. A step of a few hundred parallel ops then takes many time slices. Measured on the 2-core machine
with its cores taken by other processes: decode 2.8 tok/s on 2 threads against 85 on 1, `LLM()` 19 s against 1 s.

`ThreadPolicy` (auto): about every quarter second (between weight modules while loading, between steps after), it
reads how much CPU the other processes used since its last reading (/proc/stat less this process's own time) and
uses as many threads as that leaves idle cores: between 1 and `max_threads`. It starts on one thread, the cheap
choice either way, until its first reading. With a fixed `num_threads` (or MISTRALPY_NUM_THREADS, for engines given
none, as llama.cpp's -t) it uses exactly that many: float32 matmuls round differently on different thread counts,
so runs that must be reproducible to the last bit fix it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import torch

from .errors import InvalidRequestError

ENV_VAR = "MISTRALPY_NUM_THREADS"
INTERVAL_S = 0.25  # at least this much wall time between readings: /proc/stat counts in 10 ms ticks


@functools.cache
def process_default_threads() -> int:
    """torch's thread count the first time an engine asks (its default, or the caller's set_num_threads): the most
    an auto policy uses, whatever earlier policies in this process set since."""
    return torch.get_num_threads()


def threads_for(cpus: int, others: float, max_threads: int) -> int:
    """Threads for `cpus` cores of which other processes keep `others` busy (in cores): the idle ones, rounded."""
    return max(1, min(max_threads, int(cpus - others + 0.5)))


def check_num_threads(num_threads: int | None) -> None:
    if num_threads is not None and (
        not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1
    ):
        raise InvalidRequestError(f"num_threads must be a positive integer or None (auto), got {num_threads!r}")


def threads_from_env() -> int | None:
    """MISTRALPY_NUM_THREADS, where set: a fixed thread count for the engines given none."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidRequestError(f"{ENV_VAR} must be a positive integer, got {value!r}")
    return int(value)


class CpuMeter:
    """The CPU time other processes used since the last reading, in cores (Linux: /proc/stat; elsewhere None)."""

    def __init__(
        self,
        path: str = "/proc/stat",
        clock: Callable[[], float] = time.monotonic,
        own_cpu: Callable[[], float] = time.process_time,
        tick_s: float | None = None,
    ) -> None:
        self.path, self.clock, self.own_cpu = path, clock, own_cpu
        self.tick_s = tick_s or (1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01)
        self.last = self._read()

    @property
    def available(self) -> bool:
        return self.last is not None

    def _read(self) -> tuple[float, float, float] | None:
        """(wall time, CPU time of all processes, CPU time of this one), seconds."""
        try:
            with open(self.path) as f:
                fields = f.readline().split()
            # user nice system idle iowait irq softirq steal: all but idle and iowait is busy (steal: taken by the host)
            ticks = [int(v) for v in fields[1:9]]
        except (OSError, ValueError):
            return None
        if fields[0] != "cpu" or len(ticks) < 8:
            return None
        busy = sum(ticks) - ticks[3] - ticks[4]
        return self.clock(), busy * self.tick_s, self.own_cpu()

    def others(self) -> float | None:
        now = self._read()
        if now is None or self.last is None or now[0] <= self.last[0]:
            return None
        (wall0, busy0, own0), (wall1, busy1, own1) = self.last, now
        self.last = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))


class ThreadPolicy:
    def __init__(
        self, num_threads: int | None = None, meter: CpuMeter | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        check_num_threads(num_threads)
        if num_threads is None and meter is None:
            num_threads = threads_from_env()
        self.fixed = num_threads
        self.max_threads = num_threads or process_default_threads()
        self.cpus = os.cpu_count() or 1
        self.meter = meter if meter is not None or num_threads is not None else CpuMeter()
        auto = self.meter is not None and self.meter.available
        self.threads = num_threads or (1 if auto else self.max_threads)
        self.clock = clock
        self._due = clock() + INTERVAL_S
        self.apply()

    def update(self) -> int:
        """Re-decide (auto, at most every INTERVAL_S) and apply on the calling thread; returns the thread count."""
        if self.fixed is None and self.meter is not None and self.clock() >= self._due:
            others = self.meter.others()
            if others is not None:
                self.threads = threads_for(self.cpus, others, self.max_threads)
            self._due = self.clock() + INTERVAL_S
        self.apply()
        return self.threads

    def apply(self) -> None:
        # torch's OpenMP thread count is per calling thread: the engine may load on one thread and step on another
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
