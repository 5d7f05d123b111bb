"""A tensor-parallel worker rank (1..N-1): loads its shard on its device, then follows rank 0's commands, in order,
until told to stop: build the KV cache, run a step's forward pass, compute logits of given hidden rows. It waits for
a command without a time limit (a server may idle for hours); rank 0's exit ends the wait with an error."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from ...config import EngineConfig, resolve_dtype
from ...device import Placement, placement_of
from ...engine.model_runner import ModelRunner
from ...loader import GGMLParams, open_model_source
from ...loader.model_loader import load_model
from ...threads import ThreadPolicy
from .checks import check_tensor_parallel
from .group import init_group
from .shard import TensorShard

logger = logging.getLogger(__name__)


def run_worker(
    rank: int, size: int, init_method: str, timeout_s: float, config: EngineConfig, path: str, local_rank: int
) -> None:
    threads = ThreadPolicy(config.num_threads)
    placement = placement_of(config.device, config.kernels)
    device = check_tensor_parallel(config, placement, local_rank)
    group = init_group(rank, size, init_method, timeout_s, device)
    try:
        source = open_model_source(path, GGMLParams.from_engine_config(config))
        dtype = resolve_dtype(config.dtype)
        shard = TensorShard(rank, size, group)
        model = load_model(
            source, dtype, weights=config.weights, quantization=config.quantization, tensor_shard=shard,
            backend=placement.kernels,
        )  # fmt: skip
        _serve(model, group, threads, Placement(device, placement.kernels))
    finally:
        dist.destroy_process_group()


@torch.inference_mode()
def _serve(model: torch.nn.Module, group, threads: ThreadPolicy, placement: Placement) -> None:
    runner: ModelRunner | None = None
    while True:
        command, *args = group.broadcast_object()
        if command == "stop":
            return
        if command == "init":
            runner = ModelRunner(model, *args, placement=placement)
        elif command == "step":
            threads.update()
            payload = args[0].to(placement.device)
            meta = payload.metadata(runner.write_kernel, runner.decode_kernel, runner.prefill_kernel)
            model(payload.input_ids, payload.positions, runner.kv_caches, meta)
        elif command == "logits":
            model.compute_logits(args[0].to(placement.device))
        else:
            raise RuntimeError(f"unknown tensor-parallel command {command!r}")
