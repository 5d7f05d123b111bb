"""Tensor-parallel ranks for the tests: each spawned process loads its shard of every model named, runs the same
steps as a single process would, and rank 0 saves the logits."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mistralpy.distributed.tensor_parallel.group import init_group
from mistralpy.distributed.tensor_parallel.shard import TensorShard
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model

from .model_steps import BLOCK, decode, prefill


def step_logits(model, prompt: list[int], steps: list[int]) -> torch.Tensor:
    """Logits of a prefill in two chunks, then one decode step per token of `steps`, as one (T, vocab) tensor."""
    runner = ModelRunner(model, num_blocks=64, block_size=BLOCK, dtype=torch.float32)
    with torch.inference_mode():
        split = len(prompt) // 2 + 1
        rows = [prefill(runner, prompt[:split], 0), prefill(runner, prompt[split:], split)]
        rows += [decode(runner, t, len(prompt) + i).unsqueeze(0) for i, t in enumerate(steps)]
    return torch.cat(rows)


def single_logits(path: Path, prompt: list[int], steps: list[int]) -> torch.Tensor:
    return step_logits(load_model(open_model_source(path), torch.float32), prompt, steps)


def _rank(rank: int, size: int, init: str, jobs: dict[str, str], prompt, steps, out: str) -> None:
    torch.set_num_threads(1)
    group = init_group(rank, size, init, timeout_s=120)
    try:
        for key, path in jobs.items():
            model = load_model(open_model_source(path), torch.float32, tensor_shard=TensorShard(rank, size, group))
            logits = step_logits(model, prompt, steps)
            if rank == 0:
                torch.save(logits, Path(out) / f"{key}.pt")
    finally:
        dist.destroy_process_group()


def parallel_logits(jobs: dict[str, Path], prompt, steps, tmp: Path, size: int = 2) -> dict[str, torch.Tensor]:
    """key -> logits of the model at jobs[key], computed by `size` tensor-parallel ranks (gloo)."""
    out = tmp / "tp_out"
    out.mkdir(exist_ok=True)
    init = f"file://{tmp / 'tp_init'}"
    mp.spawn(_rank, (size, init, {k: str(v) for k, v in jobs.items()}, prompt, steps, str(out)), nprocs=size)
    return {key: torch.load(out / f"{key}.pt") for key in jobs}
