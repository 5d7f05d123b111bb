"""Starting an engine's ranks: `start_tensor_parallel` gives the engine what loads and runs its model, one process
(tensor_parallel_size 1: exactly the single-process path, no process group) or a tensor-parallel group whose workers
are spawned with torch.multiprocessing and joined over gloo. A worker found dead before a step, or a collective that
fails, raises TensorParallelError: the engine never waits on a rank that is gone (watcher.py ends a server)."""

from __future__ import annotations

import logging
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from ...config import EngineConfig
from ...engine.model_runner import ModelRunner
from ...errors import InvalidRequestError
from .group import TensorParallelError, init_group
from .runner import TensorParallelRunner
from .shard import TensorShard
from .watcher import watch_workers
from .worker import run_worker

logger = logging.getLogger(__name__)
COLLECTIVE_TIMEOUT_S = 300.0  # a rank that hangs (rather than dies: gloo sees that at once) fails the step after it
# options whose state lives in one process's model or runner (adapters, draft models, images, pooled vectors)
_SINGLE_PROCESS_OPTIONS = (
    "enable_lora", "xlora", "anymoe", "lora_merge", "speculative_config", "mmproj", "device_layers", "n_gpu_layers"
)  # fmt: skip


@dataclass
class SingleProcess:
    block_size: int
    shard: None = None

    def runner(self, model, num_blocks: int, dtype, kv_cache_dtype: str, lora, placement=None, config=None):
        return ModelRunner(
            model, num_blocks, self.block_size, dtype, kv_cache_dtype, lora=lora, placement=placement, config=config
        )


class TensorParallel:
    """Rank 0's side of the group: the worker processes, the shard this process loads, the command channel."""

    def __init__(self, config: EngineConfig, model_path: str) -> None:
        size, self.block_size = config.tensor_parallel_size, config.block_size
        self._dir = tempfile.TemporaryDirectory(prefix="mistralpy-tp-")
        init = f"file://{Path(self._dir.name) / 'rendezvous'}"
        context = mp.get_context("spawn")
        self.workers = [
            context.Process(
                target=run_worker, args=(rank, size, init, COLLECTIVE_TIMEOUT_S, config, model_path), daemon=True
            )
            for rank in range(1, size)
        ]
        for w in self.workers:
            w.start()
        self.closing, group = threading.Event(), []
        # at close, garbage collection or exit: the workers told to stop (a worker waits for its next command)
        self._finalizer = weakref.finalize(self, _stop, self.workers, self.closing, group)
        threading.Thread(target=watch_workers, args=(self.workers, self.closing), daemon=True).start()
        group.append(init_group(0, size, init, COLLECTIVE_TIMEOUT_S))
        self.shard = TensorShard(0, size, group[0])

    def runner(self, model, num_blocks: int, dtype, kv_cache_dtype: str, lora, placement=None, config=None):
        # placement: the CPU's, config: no device map (start_tensor_parallel refuses others); no CUDA graphs on CPUs
        return TensorParallelRunner(self, model, num_blocks, self.block_size, dtype, kv_cache_dtype, lora)

    def send(self, *command) -> None:
        """One command to every worker (they run them in order)."""
        self.check_workers()
        self.shard.group.broadcast_object(command)

    def check_workers(self) -> None:
        for rank, w in enumerate(self.workers, start=1):
            if not w.is_alive():
                raise TensorParallelError(
                    f"tensor-parallel worker rank {rank} (pid {w.pid}) exited with code {w.exitcode}; "
                    "this engine cannot run another step"
                )

    def close(self) -> None:
        """Stops the workers (politely when they are all alive) and leaves the process group."""
        self._finalizer()
        if dist.is_initialized():
            dist.destroy_process_group()


def _stop(workers: list, closing: threading.Event, group: list) -> None:
    closing.set()
    if group and all(w.is_alive() for w in workers):
        try:
            group[0].broadcast_object(("stop",))
        except TensorParallelError:
            logger.warning("a tensor-parallel worker did not take the stop command")
    for w in workers:
        w.join(timeout=10)
        if w.is_alive():
            w.terminate()
            w.join(timeout=5)


def start_tensor_parallel(config: EngineConfig, model_path: str, placement=None) -> SingleProcess | TensorParallel:
    if config.tensor_parallel_size == 1:
        return SingleProcess(config.block_size)
    if placement is not None and (placement.device.type != "cpu" or placement.kernels != "native"):
        raise InvalidRequestError("tensor_parallel_size > 1 runs on CPUs only (gloo); use --device cpu")
    given = [name for name in _SINGLE_PROCESS_OPTIONS if getattr(config, name)]
    if given or config.task == "embed":
        what = ", ".join(given) if given else "task 'embed'"
        raise InvalidRequestError(f"tensor_parallel_size > 1 does not support {what} yet")
    if dist.is_initialized():
        raise InvalidRequestError(
            "this process already runs a tensor-parallel group: one tensor-parallel engine a process"
        )
    return TensorParallel(config, model_path)
