"""StepPayload: what rank 0 sends the workers for one forward pass (the model runner's inputs, not the scheduler's
requests: those hold matchers, generators and other state that stays on rank 0). It travels pickled, its tensors on
the CPU (a CUDA tensor would unpickle onto rank 0's device index); each worker moves them to its own device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ...layers.attention import AttentionMetadata, PrefillSpan


@dataclass
class StepPayload:
    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    num_decode_tokens: int
    decode_block_tables: torch.Tensor | None
    decode_lens: torch.Tensor | None
    prefills: list[PrefillSpan]
    prompt_lens: torch.Tensor | None

    @classmethod
    def of(cls, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> StepPayload:
        return cls(
            input_ids, positions, meta.slot_mapping, meta.num_decode_tokens, meta.decode_block_tables,
            meta.decode_lens, meta.prefills, meta.prompt_lens,
        ).to(torch.device("cpu"))  # fmt: skip

    def to(self, device: torch.device) -> StepPayload:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        spans = [dataclasses.replace(s, block_table=s.block_table.to(device)) for s in self.prefills]
        return StepPayload(
            self.input_ids.to(device), self.positions.to(device), self.slot_mapping.to(device), self.num_decode_tokens,
            move(self.decode_block_tables), move(self.decode_lens), spans, move(self.prompt_lens),
        )  # fmt: skip

    def metadata(self, write_kernel, decode_kernel, prefill_kernel) -> AttentionMetadata:
        """The step's attention metadata on a worker, with that worker's native kernels."""
        meta = AttentionMetadata(
            self.slot_mapping,
            self.num_decode_tokens,
            self.decode_block_tables,
            self.decode_lens,
            self.prefills,
            write_kernel=write_kernel,
            prefill_kernel=prefill_kernel,
            prompt_lens=self.prompt_lens,
        )
        if self.num_decode_tokens:
            meta.decode_kernel = decode_kernel
        return meta
