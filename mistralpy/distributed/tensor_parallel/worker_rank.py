"""The entries a torchrun-started process takes on ranks 1..N-1: `mistralpy serve` (serve_if_worker_rank) and
Python (run_if_worker_rank). Such a rank loads its shard of the one model rank 0 serves and runs the worker loop
until rank 0 stops it (it then returns) or rank 0 goes away (TensorParallelError)."""

from __future__ import annotations

import argparse
from typing import Any

from ...config import EngineConfig
from ...errors import InvalidRequestError
from ...loader.default_model import default_model_path
from .launch import COLLECTIVE_TIMEOUT_S
from .torchrun import TorchrunRank, check_world_size, torchrun_rank
from .worker import run_worker


def run_if_worker_rank(**options: Any) -> bool:
    """Under torchrun, on ranks 1..N-1: runs this rank's worker for the engine rank 0 builds with the same `LLM`
    keyword arguments, and returns True once rank 0 has stopped it. Elsewhere (rank 0, no torchrun): False at once.

        options = dict(model="model.gguf", tensor_parallel_size=2)
        if run_if_worker_rank(**options):
            raise SystemExit(0)
        llm = LLM(**options)  # rank 0: the engine
    """
    run = torchrun_rank()
    if run is None or run.rank == 0:
        return False
    serve_worker_rank(run, EngineConfig(**options))
    return True


def serve_if_worker_rank(args: argparse.Namespace) -> bool:
    """`mistralpy serve` under torchrun: checks the world against --tensor-parallel-size on every rank; on ranks
    1..N-1 runs the worker (True when it is done), on rank 0 returns False (the server runs, its engine joins)."""
    run = torchrun_rank()
    if run is None:
        return False
    if args.replicas is not None:
        raise InvalidRequestError("--replicas runs on Ray Serve, not under torchrun: start it without torchrun")
    check_world_size(run, args.tensor_parallel_size)
    if run.rank == 0:
        return False
    from ...server.served_models import served_models
    from ...server.server_app import base_config

    served, _ = served_models(args, base_config(args), {})
    if len(served) != 1:
        raise InvalidRequestError(
            f"under torchrun serve one model (rank 0's tensor-parallel engine), not {len(served)}"
        )
    serve_worker_rank(run, served[0].config)
    return True


def serve_worker_rank(run: TorchrunRank, config: EngineConfig) -> None:
    check_world_size(run, config.tensor_parallel_size)
    path = config.model or default_model_path()
    run_worker(run.rank, run.world_size, "env://", COLLECTIVE_TIMEOUT_S, config, path, run.local_rank)
