"""The group's two waits without a limit, with gloo between two spawned processes: a worker idle for longer than the
compute collectives' timeout still takes rank 0's next command (an idle server's workers used to time out after 300 s
and end it), and rank 0's watch on a worker's liveness link ends, with an error, when that worker's process exits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from mistralpy.distributed.tensor_parallel.group import TensorParallelError, init_group

TIMEOUT_S = 2.0  # the compute collectives' (the rendezvous' too: both ranks join at once, below)


def _worker(init: str, out: str) -> None:
    Path(out + ".ready").touch()  # torch imported: the rendezvous will not wait on this process's start
    group = init_group(1, 2, init, TIMEOUT_S)
    command = group.broadcast_object()  # rank 0 sends it after 2.5 x TIMEOUT_S
    Path(out).write_text(repr(command))
    dist.destroy_process_group()  # its exit closes its liveness link


def test_idle_worker_outwaits_the_timeout_and_its_exit_ends_the_watch(tmp_path):
    out = tmp_path / "command"
    worker = mp.get_context("spawn").Process(target=_worker, args=(f"file://{tmp_path / 'init'}", str(out)))
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "command.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        group = init_group(0, 2, f"file://{tmp_path / 'init'}", TIMEOUT_S)
        time.sleep(2.5 * TIMEOUT_S)
        group.broadcast_object(("step", 7))
        started = time.monotonic()
        with pytest.raises(TensorParallelError, match="went away"):
            group.wait_for_exit(1)
        worker.join(timeout=30)
        assert worker.exitcode == 0 and out.read_text() == "('step', 7)"
        assert time.monotonic() - started < 30
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        if worker.is_alive():
            worker.kill()
