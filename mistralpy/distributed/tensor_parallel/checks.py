"""What every tensor-parallel rank checks before it joins its group, so that a rank that would refuse fails alone and
at once rather than leaving the others waiting at the rendezvous."""

from __future__ import annotations

import torch

from ...config import EngineConfig
from ...device import Placement
from ...errors import InvalidRequestError
from .backend import rank_device
from .torchrun import check_world_size, torchrun_rank

# options whose state lives in one process's model or runner (adapters, draft models, images, pooled vectors)
_SINGLE_PROCESS_OPTIONS = (
    "enable_lora", "xlora", "anymoe", "lora_merge", "speculative_config", "mmproj", "device_layers", "n_gpu_layers"
)  # fmt: skip


def check_tensor_parallel(config: EngineConfig, placement: Placement, local_rank: int) -> torch.device:
    """The options one process holds refused, the world torchrun started checked; this rank's device."""
    if placement.device.type == "cpu" and placement.kernels != "native":
        raise InvalidRequestError("tensor_parallel_size > 1 on the CPU runs the native kernels; leave --kernels unset")
    given = [name for name in _SINGLE_PROCESS_OPTIONS if getattr(config, name)]
    if given or config.task == "embed":
        what = ", ".join(given) if given else "task 'embed'"
        raise InvalidRequestError(f"tensor_parallel_size > 1 does not support {what} yet")
    if config.gpu_memory_utilization is not None:
        raise InvalidRequestError(
            "tensor_parallel_size > 1 does not support gpu_memory_utilization yet (its memory profile runs on one "
            "rank); size each rank's KV cache with kv_cache_tokens"
        )
    check_world_size(torchrun_rank(), config.tensor_parallel_size)
    cuda_count = torch.cuda.device_count() if placement.device.type == "cuda" else 0
    device = rank_device(placement.device, local_rank, cuda_count)
    if device != placement.device and local_rank == 0:
        raise InvalidRequestError(
            f"tensor-parallel ranks compute on the CUDA device of their local rank (rank 0 on {device}), not "
            f"{placement.device}: use --device cuda"
        )
    return device
