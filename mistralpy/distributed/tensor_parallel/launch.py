"""Starting an engine's ranks: `start_tensor_parallel` gives the engine what loads and runs its model, one process
(tensor_parallel_size 1: exactly the single-process path, no process group) or a tensor-parallel group: its workers
spawned with torch.multiprocessing (file:// rendezvous), or, when torchrun started this process (its RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT: torchrun.py), started by torchrun on this and other nodes (env://). A worker
found gone before a step, or a collective that fails, raises TensorParallelError: the engine never waits on a rank
that is gone (watcher.py ends a server)."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ...config import EngineConfig
from ...device import Placement
from ...engine.model_runner import ModelRunner
from ...errors import InvalidRequestError
from .checks import check_tensor_parallel
from .group import TensorParallelError, init_group
from .remote_ranks import RemoteRanks
from .runner import TensorParallelRunner
from .shard import TensorShard
from .torchrun import TorchrunRank, torchrun_rank
from .watcher import exit_code, has_exited, watch_workers
from .worker import run_worker

logger = logging.getLogger(__name__)
COLLECTIVE_TIMEOUT_S = 300.0  # a rank that hangs (rather than dies: gloo sees that at once) fails the step after it


@dataclass
class SingleProcess:
    block_size: int
    shard: None = None

    def runner(self, model, num_blocks: int, dtype, kv_cache_dtype: str, lora, placement=None, config=None):
        return ModelRunner(
            model, num_blocks, self.block_size, dtype, kv_cache_dtype, lora=lora, placement=placement, config=config
        )


class TensorParallel:
    """Rank 0's side of the group: the workers (spawned here, or torchrun's), the shard this process loads, the
    command channel."""

    def __init__(self, config: EngineConfig, model_path: str, device: torch.device, run: TorchrunRank | None) -> None:
        size, self.block_size = config.tensor_parallel_size, config.block_size
        self.closing, group, self.remote = threading.Event(), [], None
        self.workers: list = []
        if run is None:
            self._dir = tempfile.TemporaryDirectory(prefix="mistralpy-tp-")
            init = f"file://{Path(self._dir.name) / 'rendezvous'}"
            context = mp.get_context("spawn")
            self.workers = [
                context.Process(
                    target=run_worker,
                    args=(rank, size, init, COLLECTIVE_TIMEOUT_S, config, model_path, rank),
                    daemon=True,
                )
                for rank in range(1, size)
            ]
            for w in self.workers:
                w.start()
            threading.Thread(target=watch_workers, args=(self.workers, self.closing), daemon=True).start()
        # at close, garbage collection or exit: the workers told to stop (a worker waits for its next command)
        self._finalizer = weakref.finalize(self, _stop, self.workers, self.closing, group)
        group.append(init_group(0, size, "env://" if run else init, COLLECTIVE_TIMEOUT_S, device))
        if run is not None:
            self.remote = RemoteRanks(group[0], self.closing)
            group.append(self.remote)
        self.shard = TensorShard(0, size, group[0])

    def runner(self, model, num_blocks: int, dtype, kv_cache_dtype: str, lora, placement=None, config=None):
        # config: no device map (start_tensor_parallel refuses one) and no CUDA graphs (the workers run eagerly)
        return TensorParallelRunner(self, model, num_blocks, self.block_size, dtype, kv_cache_dtype, lora, placement)

    def send(self, *command) -> None:
        """One command to every worker (they run them in order)."""
        self.check_workers()
        try:
            self.shard.group.broadcast_object(command)
        except TensorParallelError:
            self._name_the_gone(within_s=1.0)
            raise

    def check_workers(self) -> None:
        for rank, w in enumerate(self.workers, start=1):
            if has_exited(w):
                raise TensorParallelError(
                    f"tensor-parallel worker rank {rank} (pid {w.pid}) exited with code {exit_code(w)}; "
                    "this engine cannot run another step"
                )
        if self.remote is not None:
            self.remote.check()

    def _name_the_gone(self, within_s: float) -> None:
        """After a failed broadcast: the rank that went away, named (its links close a moment before its end shows)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            self.check_workers()
            time.sleep(0.02)

    def close(self) -> None:
        """Stops the workers (politely when they are all alive) and leaves the process group."""
        self._finalizer()
        if dist.is_initialized():
            dist.destroy_process_group()


def _stop(workers: list, closing: threading.Event, group: list) -> None:
    closing.set()
    remote = group[1] if len(group) > 1 else None
    if group and all(w.is_alive() for w in workers) and (remote is None or remote.all_alive()):
        try:
            group[0].broadcast_object(("stop",))
        except TensorParallelError:
            logger.warning("a tensor-parallel worker did not take the stop command")
    if remote is not None:
        remote.join(timeout=10)
    for w in workers:
        w.join(timeout=10)
        if w.is_alive():
            w.terminate()
            w.join(timeout=5)


def start_tensor_parallel(config: EngineConfig, model_path: str, placement=None) -> SingleProcess | TensorParallel:
    if config.tensor_parallel_size == 1:
        return SingleProcess(config.block_size)
    placement = placement or Placement(torch.device("cpu"), "native")
    run = torchrun_rank()
    if run is not None and run.rank != 0:
        raise InvalidRequestError(
            f"this process is torchrun's rank {run.rank}: it runs a worker (mistralpy serve, or "
            "run_if_worker_rank in Python), not an engine; rank 0 runs the engine"
        )
    device = check_tensor_parallel(config, placement, 0)
    if dist.is_initialized():
        raise InvalidRequestError(
            "this process already runs a tensor-parallel group: one tensor-parallel engine a process"
        )
    return TensorParallel(config, model_path, device, run)
