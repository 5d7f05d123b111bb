"""Memory planning on a GPU (vLLM's --gpu-memory-utilization): the KV pool gets what is left of utilization × total
memory after the weights, the peak activations of a profile forward of a full step, and what others hold (the CUDA
context, other processes). `kv_blocks_for_memory` is the arithmetic, a pure function; `measure` reads a CUDA
device's numbers around a profile forward."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ModelLoadError

GIB = 1 << 30


@dataclass(frozen=True)
class MemoryProfile:
    total: int  # the device's memory, bytes
    weights: int  # what torch held after loading the model (weights, buffers, LoRA slots)
    peak_activation: int  # the profile forward's peak above that
    other: int  # memory not held by torch: the CUDA context, other processes


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def kv_blocks_for_memory(profile: MemoryProfile, utilization: float, block_bytes: int, min_blocks: int) -> int:
    """Blocks of `block_bytes` that fit in utilization × total − weights − peak activations − others' memory; an
    error naming each number when fewer than `min_blocks` (one max_model_len sequence) fit."""
    budget = utilization * profile.total - profile.weights - profile.peak_activation - profile.other
    blocks = max(0, math.floor(budget / block_bytes))
    if blocks < min_blocks:
        raise ModelLoadError(
            f"the model does not fit: {utilization:g} x {_gib(profile.total)} (gpu_memory_utilization x total) - "
            f"{_gib(profile.weights)} weights - {_gib(profile.peak_activation)} peak activations - "
            f"{_gib(profile.other)} held outside torch leaves {_gib(max(budget, 0))} for the KV cache: {blocks} "
            f"blocks of {_gib(block_bytes)}, and one sequence of max_model_len needs {min_blocks}; raise "
            "gpu_memory_utilization, lower max_model_len or max_num_batched_tokens, or use a smaller model"
        )
    return blocks


def measure(device: torch.device, forward: Callable[[], object]) -> MemoryProfile:
    """A CUDA device's numbers around `forward` (the profile step); everything it allocates is freed after."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    forward()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    other = max(0, total - free - torch.cuda.memory_reserved(device))
    return MemoryProfile(total, before, peak, other)
