"""TensorParallelRunner: rank 0's ModelRunner. It prepares each step as one process would, sends the step's inputs
to the workers (one broadcast) before its own forward pass, and asks them for their logits slices before each
gather; the scheduler, the sampler and every request's state stay on rank 0."""

from __future__ import annotations

import torch

from ...engine.model_runner import ModelRunner, StepInputs
from ...engine.scheduler import SchedulerOutput
from .step_payload import StepPayload


class TensorParallelRunner(ModelRunner):
    def __init__(
        self, tp, model: torch.nn.Module, num_blocks: int, block_size: int, dtype, kv_cache_dtype, lora, placement=None
    ) -> None:
        self.tp = tp
        tp.send("init", num_blocks, block_size, dtype, kv_cache_dtype)
        super().__init__(model, num_blocks, block_size, dtype, kv_cache_dtype, lora=lora, placement=placement)
        tp.shard.group.announce_logits = lambda hidden: tp.send("logits", hidden.cpu())

    def _prepare(self, sched: SchedulerOutput) -> StepInputs:
        inputs = super()._prepare(sched)
        self.tp.send("step", StepPayload.of(inputs.input_ids, inputs.positions, inputs.meta))
        return inputs

    def close(self) -> None:
        self.tp.close()
