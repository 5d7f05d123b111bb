"""Tensor parallelism over torch.distributed (gloo on CPU): Megatron-style sharded layers, one worker process per
extra rank, the scheduler on rank 0 broadcasting each step's inputs (docs/structure.md lists the modules)."""
