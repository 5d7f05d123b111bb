"""TorchrunRank: this process's place in a group that torchrun (or any launcher that sets the same variables: RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, as torch.distributed's env:// reads them) started on one or several
nodes. Rank 0 runs the engine and joins the group over env://; the other ranks run the worker loop
(worker_rank.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ...errors import InvalidRequestError

_REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class TorchrunRank:
    rank: int
    world_size: int
    local_rank: int


def torchrun_rank(environ: Mapping[str, str] | None = None) -> TorchrunRank | None:
    """None when the launcher's variables are absent (a plain process: workers are spawned)."""
    env = os.environ if environ is None else environ
    if not all(env.get(name) for name in _REQUIRED):
        return None
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise InvalidRequestError(f"torchrun's RANK, WORLD_SIZE and LOCAL_RANK must be integers: {e}") from e
    if not 0 <= rank < size or local < 0:
        raise InvalidRequestError(f"torchrun's RANK {rank} is not in [0, WORLD_SIZE {size}) or LOCAL_RANK {local} < 0")
    return TorchrunRank(rank, size, local)


def check_world_size(run: TorchrunRank | None, tensor_parallel_size: int) -> None:
    """Under torchrun every rank is one rank of the tensor-parallel group: the counts must agree."""
    if run is not None and run.world_size != tensor_parallel_size:
        raise InvalidRequestError(
            f"torchrun started {run.world_size} ranks (WORLD_SIZE; --nnodes x --nproc-per-node) but "
            f"--tensor-parallel-size is {tensor_parallel_size}: they must be equal"
        )
