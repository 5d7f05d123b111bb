"""Which torch.distributed backend a tensor-parallel group computes with, and which device each rank computes on:
NCCL between CUDA devices, gloo between CPUs. Pure functions of their inputs (launch.py and worker.py hand them the
engine's device and the rank's local rank)."""

from __future__ import annotations

import torch

from ...errors import InvalidRequestError


def backend_for(device: torch.device) -> str:
    """The backend of the collectives the sharded layers run on `device`'s tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, local_rank: int, cuda_count: int) -> torch.device:
    """The device of the rank that is `local_rank` on its node: the CPU for a CPU engine, else CUDA device
    `local_rank` (one GPU a rank, as torchrun's LOCAL_RANK numbers them)."""
    if device.type != "cuda":
        return device
    if local_rank >= cuda_count:
        raise InvalidRequestError(
            f"tensor-parallel rank with local rank {local_rank} needs CUDA device {local_rank}, but torch sees "
            f"{cuda_count} CUDA device(s) on this node: start at most {cuda_count} ranks a node"
        )
    return torch.device("cuda", local_rank)
