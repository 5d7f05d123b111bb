"""TPGroup: a rank's view of its tensor-parallel process group: the collectives the sharded layers run (NCCL between
GPUs, gloo between CPUs: backend.py), rank 0's commands (always gloo: pickled objects), failures turned into one
clear error.

Three groups over the same ranks: the compute group fails a collective after `timeout_s` (a rank that hangs); the
command group waits without a limit (a worker idles there while the server has no request: a rank that dies closes
its connections, which fails the wait at once); the liveness group carries no data: rank 0 waits on each remote
rank's link in it, and a rank's process that ends closes it (remote_ranks.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from ...errors import GenerationError
from .backend import backend_for


class TensorParallelError(GenerationError):
    """A tensor-parallel rank failed or went away: the group cannot compute another step."""


NO_LIMIT = timedelta(days=3650)  # a wait that only a peer's exit ends
CPU = torch.device("cpu")


def init_group(rank: int, size: int, init_method: str, timeout_s: float, device: torch.device = CPU) -> TPGroup:
    """Joins the group (every rank calls it, in the same order); `device`: this rank's, whose tensors the compute
    collectives see (a CUDA rank's is its current device before the NCCL group forms)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group(backend_for(device), init_method=init_method, rank=rank, world_size=size, timeout=timeout)
    commands = dist.new_group(backend="gloo", timeout=NO_LIMIT)
    liveness = dist.new_group(backend="gloo", timeout=NO_LIMIT)
    return TPGroup(rank, size, device, commands, liveness)


@dataclass
class TPGroup:
    rank: int
    size: int
    device: torch.device = CPU
    commands: object = field(default=None, repr=False)  # the gloo group rank 0's commands travel in
    liveness: object = field(default=None, repr=False)  # the gloo group whose links only a rank's exit closes
    # rank 0 of an engine: tells the workers which hidden rows to compute logits of, before the gather (runner.py)
    announce_logits: Callable[[torch.Tensor], None] | None = field(default=None, repr=False)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous()
        _collective(dist.all_reduce, t)
        return t

    def gather_logits(self, hidden: torch.Tensor, local: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Every rank's vocabulary slice of the logits, side by side in rank order."""
        if self.announce_logits is not None:
            self.announce_logits(hidden)
        part = local(hidden).contiguous()
        parts = [torch.empty_like(part) for _ in range(self.size)]
        _collective(dist.all_gather, parts, part)
        return torch.cat(parts, dim=-1)

    def broadcast_object(self, obj: object = None) -> object:
        """Rank 0's object on every rank."""
        box = [obj]
        _collective(dist.broadcast_object_list, box, src=0, group=self.commands)
        return box[0]

    def wait_for_exit(self, rank: int) -> None:
        """Rank 0: returns (raising TensorParallelError) once `rank`'s process has ended."""
        _collective(dist.recv, torch.zeros(1), src=rank, group=self.liveness)


def _collective(op: Callable, *args, **kwargs) -> None:
    try:
        op(*args, **kwargs)
    except (RuntimeError, dist.DistBackendError) as e:
        raise TensorParallelError(f"a tensor-parallel rank failed or went away during a collective: {e}") from e
