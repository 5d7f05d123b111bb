"""The engine's ModelRunner and its KV pool's size: from kv_cache_tokens / num_kv_blocks on the CPU; on a CUDA
device from what its memory holds after the weights and a profile forward (gpu_memory.py), unless num_kv_blocks
fixes it."""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..config import EngineConfig
from ..device import check_memory_utilization
from ..errors import InvalidRequestError
from ..layers.attention import AttentionMetadata, PrefillSpan
from ..layers.kv_cache import cache_shape, storage_dtype
from .gpu_memory import kv_blocks_for_memory, measure
from .model_runner import ModelRunner

if TYPE_CHECKING:
    from ..device import Placement
    from ..lora.manager import LoRAManager


class RunnerParts(Protocol):
    """What build_runner reads of the engine being built."""

    placement: Placement
    tp: Any  # distributed.tensor_parallel.launch: SingleProcess or TensorParallel (their `runner`)
    dtype: torch.dtype
    kv_cache_dtype: str
    lora: LoRAManager | None


def build_runner(
    engine: RunnerParts, model: torch.nn.Module, config: EngineConfig, max_model_len: int, step_tokens: int
) -> tuple[ModelRunner, int]:
    """The runner (one process's, or rank 0's of a tensor-parallel group: `engine.tp`) and its number of KV blocks,
    for the engine's placement, dtype, K/V format and LoRA."""
    bs, placement = config.block_size, engine.placement
    if placement.device.type != "cpu" and (config.xlora is not None or config.anymoe is not None):
        raise InvalidRequestError("X-LoRA and AnyMoE models run on the CPU only; use --device cpu")
    if placement.device.type != "cpu" and hasattr(model, "encode_images"):
        raise InvalidRequestError("vision-language models run on the CPU only; use --device cpu")
    utilization = check_memory_utilization(config.gpu_memory_utilization, placement.device)
    if config.gpu_memory_utilization is not None and config.num_kv_blocks is not None:
        raise InvalidRequestError("give num_kv_blocks or gpu_memory_utilization, not both")

    def runner(num_blocks: int) -> ModelRunner:
        tp, dtype, kv = engine.tp, engine.dtype, engine.kv_cache_dtype
        return tp.runner(model, num_blocks, dtype, kv, engine.lora, placement, config)

    # a tensor-parallel group sizes its pool from kv_cache_tokens: the profile forward would run on rank 0 alone
    if utilization is None or config.num_kv_blocks is not None or engine.tp.shard is not None:
        num_blocks = config.num_kv_blocks or -(-max(max_model_len, config.kv_cache_tokens) // bs)
        if num_blocks * bs < max_model_len:
            raise InvalidRequestError(
                f"the KV cache ({num_blocks} blocks of {bs}) cannot hold max_model_len {max_model_len}"
            )
        return runner(num_blocks), num_blocks
    tokens = min(step_tokens, max_model_len)
    profiled = runner(-(-tokens // bs))
    profile_kv = profiled.kv_cache.numel() * profiled.kv_cache.element_size()
    profile = measure(placement.device, partial(profile_forward, profiled, tokens, config.max_num_seqs))
    del profiled  # its small profile pool, freed before the real one is made
    profile = type(profile)(profile.total, profile.weights - profile_kv, profile.peak_activation, profile.other)
    block = block_bytes(model.config, bs, engine.dtype, engine.kv_cache_dtype)
    # the pool holds one block past the block manager's (ModelRunner.pad_block: CUDA graphs' padding rows)
    num_blocks = kv_blocks_for_memory(profile, utilization, block, -(-max_model_len // bs) + 1) - 1
    return runner(num_blocks), num_blocks


def block_bytes(cfg, block_size: int, dtype: torch.dtype, kv_cache_dtype: str) -> int:
    """One KV block's bytes over every layer, K and V."""
    shape = cache_shape(cfg.num_hidden_layers, 1, block_size, cfg.num_key_value_heads, cfg.head_dim, kv_cache_dtype)
    return math.prod(shape) * storage_dtype(dtype, kv_cache_dtype).itemsize


@torch.inference_mode()
def profile_forward(runner: ModelRunner, num_tokens: int, num_seqs: int) -> None:
    """A step's worst case: one prefill chunk of the whole token budget, and logits (float32, softmaxed as the sampler
    does) for as many rows as a step samples."""
    device = runner.device
    table = torch.arange(-(-num_tokens // runner.block_size), device=device)
    positions = torch.arange(num_tokens, device=device)
    meta = AttentionMetadata(
        positions, 0, prefills=[PrefillSpan(num_tokens, num_tokens, table)], write_kernel=runner.write_kernel,
        prefill_kernel=runner.prefill_kernel,
    )  # fmt: skip
    hidden = runner.model(torch.zeros(num_tokens, dtype=torch.long, device=device), positions, runner.kv_caches, meta)
    runner.model.compute_logits(hidden[-min(num_seqs, num_tokens) :]).float().softmax(-1)
