"""A tensor-parallel worker process (ranks 1..N-1): loads its shard, then follows rank 0's commands, in order, until
told to stop: build the KV cache, run a step's forward pass, compute logits of given hidden rows."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from ...config import EngineConfig, resolve_dtype
from ...engine.model_runner import ModelRunner
from ...loader import GGMLParams, open_model_source
from ...loader.model_loader import load_model
from ...threads import ThreadPolicy
from .group import init_group
from .shard import TensorShard

logger = logging.getLogger(__name__)


def run_worker(rank: int, size: int, init_method: str, timeout_s: float, config: EngineConfig, path: str) -> None:
    threads = ThreadPolicy(config.num_threads)
    group = init_group(rank, size, init_method, timeout_s)
    try:
        source = open_model_source(path, GGMLParams.from_engine_config(config))
        dtype = resolve_dtype(config.dtype)
        shard = TensorShard(rank, size, group)
        model = load_model(source, dtype, weights=config.weights, quantization=config.quantization, tensor_shard=shard)
        _serve(model, group, threads)
    finally:
        dist.destroy_process_group()


@torch.inference_mode()
def _serve(model: torch.nn.Module, group, threads: ThreadPolicy) -> None:
    runner: ModelRunner | None = None
    while True:
        command, *args = group.broadcast_object()
        if command == "stop":
            return
        if command == "init":
            runner = ModelRunner(model, *args)
        elif command == "step":
            threads.update()
            payload = args[0]
            meta = payload.metadata(runner.write_kernel, runner.decode_kernel, runner.prefill_kernel)
            model(payload.input_ids, payload.positions, runner.kv_caches, meta)
        elif command == "logits":
            model.compute_logits(args[0])
        else:
            raise RuntimeError(f"unknown tensor-parallel command {command!r}")
