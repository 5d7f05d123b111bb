"""TPGroup: a rank's view of its tensor-parallel process group (torch.distributed over gloo: the engine computes on
the CPU; NCCL for GPUs is not wired yet): the collectives the sharded layers run, failures turned into one clear
error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from ...errors import GenerationError


class TensorParallelError(GenerationError):
    """A tensor-parallel rank failed or went away: the group cannot compute another step."""


def init_group(rank: int, size: int, init_method: str, timeout_s: float) -> TPGroup:
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s)
    )
    return TPGroup(rank, size)


@dataclass
class TPGroup:
    rank: int
    size: int
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
        _collective(dist.broadcast_object_list, box, src=0)
        return box[0]


def _collective(op: Callable, *args, **kwargs) -> None:
    try:
        op(*args, **kwargs)
    except (RuntimeError, dist.DistBackendError) as e:
        raise TensorParallelError(f"a tensor-parallel rank failed or went away during a collective: {e}") from e
