"""StepMasks: the token masks of one step's constrained requests, computed before the sampler needs them, on a
background thread while the model's forward runs (the masks of step N + 1 depend only on the tokens up to step N), or
inline.

Only the step's own thread starts and waits for the job, and it waits before it samples or returns, so a matcher is
never touched by two threads at once: the sampler consumes the drawn tokens after the join, and the engine adds,
preempts and aborts requests only between steps."""

from __future__ import annotations

import bisect
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .token_mask import fill_bitmask

if TYPE_CHECKING:
    from ..engine.request import Request

_worker: ThreadPoolExecutor | None = None
_worker_lock = threading.Lock()


@dataclass
class StepMasks:
    rows: list[int]  # the constrained requests' positions in the step's sampled requests, ascending
    bitmask: torch.Tensor  # (len(rows), words) int32, one row each

    def within(self, start: int, stop: int) -> tuple[list[int], torch.Tensor]:
        """The masks of requests start..stop-1: their positions relative to start, and their bitmask rows."""
        lo, hi = bisect.bisect_left(self.rows, start), bisect.bisect_left(self.rows, stop)
        return [r - start for r in self.rows[lo:hi]], self.bitmask[lo:hi]


def compute_step_masks(requests: list[Request], vocab_size: int) -> StepMasks:
    """Each constrained request's matcher brought in step with its output (a no-op normally; after preemption or a
    dropped token it catches up), then all their masks filled at once."""
    rows = [i for i, r in enumerate(requests) if r.matcher is not None]
    for i in rows:
        requests[i].matcher.sync(requests[i].output_token_ids)
    return StepMasks(rows, fill_bitmask([requests[i].matcher for i in rows], vocab_size))


def start_step_masks(requests: list[Request], vocab_size: int, background: bool) -> Future[StepMasks] | None:
    """None where no request is constrained; else the masks, being computed on the background thread where
    `background`, or already computed."""
    if all(r.matcher is None for r in requests):
        return None
    if background:
        return _background().submit(compute_step_masks, list(requests), vocab_size)
    done: Future[StepMasks] = Future()
    done.set_result(compute_step_masks(requests, vocab_size))
    return done


def _background() -> ThreadPoolExecutor:
    global _worker
    with _worker_lock:
        if _worker is None:  # one thread for all engines: llguidance parallelises each batch itself
            _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mistralpy-masks")
        return _worker
