"""TensorShard: what one rank of a tensor-parallel group holds of a model, decided per weight at load.

Megatron's split: q/k/v and gate/up are column-parallel (each rank computes its own attention heads and its own
slice of the MLP's intermediate features), o/down are row-parallel (each rank's partial sum, all-reduced), the token
embedding and the LM head are vocab-parallel. The model is built from the shard's config (heads / intermediate size
divided among the ranks), so the attention, the rotary and the KV cache see a rank's heads only. Heads go to ranks in
whole KV groups, as evenly as they split (SmolLM2's 9 heads in 3 groups: 3 and 6 over 2 ranks). Mixtral's experts
are each sharded like an MLP (every rank holds a slice of every expert; the router is replicated). With fewer KV
heads than ranks, each KV head is replicated on the ranks whose query heads read it (vLLM's rule)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ...config import ModelConfig
from ...errors import InvalidRequestError, UnsupportedArchitectureError
from ...layers.embedding import VocabEmbedding
from ...layers.linear import Linear
from ...models.llama import LlamaForCausalLM
from .group import TPGroup
from .parallel_layers import parallelize
from .slicing import Piece, slice_columns, slice_rows, split_rows
from .split_plan import COLUMN_PARTS, ROW_PARALLEL, VOCAB_PARALLEL


@dataclass(frozen=True)
class TensorShard:
    rank: int
    size: int
    group: TPGroup | None = field(default=None, compare=False)  # the collectives; None: shard only (no forward)

    def check(self, cls: type, cfg: ModelConfig) -> None:
        """Refuses, before any weight is read, a model this split cannot shard exactly."""
        if not issubclass(cls, LlamaForCausalLM):
            raise UnsupportedArchitectureError(
                f"tensor parallelism supports the decoder families (Llama, Mistral, Mixtral, Qwen2/3, Phi-2/3, "
                f"Gemma 1/2/3 text), not {cfg.architecture}"
            )
        for name in ("intermediate_size", "vocab_size"):
            if getattr(cfg, name) % self.size:
                raise InvalidRequestError(
                    f"tensor_parallel_size {self.size} does not divide {name} ({getattr(cfg, name)})"
                )
        heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
        if kv < self.size and (self.size % kv or heads % self.size):
            raise InvalidRequestError(
                f"tensor_parallel_size {self.size} exceeds num_key_value_heads ({kv}): it must then be a multiple of "
                f"it and divide num_attention_heads ({heads})"
            )

    def heads(self, cfg: ModelConfig) -> tuple[int, int, int, int]:
        """(first query head, query heads, first KV head, KV heads) of this rank. Whole KV groups per rank, as even
        as they split (9 heads in 3 groups over 2 ranks: 3 and 6); fewer KV heads than ranks: each rank its share of
        the query heads and the one KV head they read."""
        heads, kv, r = cfg.num_attention_heads, cfg.num_key_value_heads, self.rank
        if kv < self.size:
            count = heads // self.size
            return r * count, count, r * kv // self.size, 1
        first, stop, group = r * kv // self.size, (r + 1) * kv // self.size, heads // kv
        return first * group, (stop - first) * group, first, stop - first

    def model_config(self, cfg: ModelConfig) -> ModelConfig:
        """The config a rank's model is built from: its heads and intermediate features (the vocabulary stays whole:
        the engine samples over all of it)."""
        _, heads, _, kv = self.heads(cfg)
        return dataclasses.replace(
            cfg,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=cfg.intermediate_size // self.size,
            head_dim=cfg.head_dim,
        )

    def build(self, cls: type, cfg: ModelConfig) -> torch.nn.Module:
        """The rank's model (on the current device, meta at load): the shard's config, its part of the vocabulary."""
        model = cls(self.model_config(cfg))
        rows, hidden = cfg.vocab_size // self.size, cfg.hidden_size
        model.model.embed_tokens = VocabEmbedding(rows, hidden)
        if model.lm_head is not None:
            model.lm_head = Linear(hidden, rows, bias=model.lm_head.bias is not None)
        return model

    def pieces(self, target: str, pieces: list[Piece], cfg: ModelConfig) -> list[Piece]:
        """This rank's part of the weight (or bias) `target`, from its stored pieces (the parts of a fused weight, or
        a weight stored whole)."""
        module, _, attr = target.rpartition(".")
        leaf = module.rpartition(".")[2]
        if leaf in COLUMN_PARTS:
            kinds = COLUMN_PARTS[leaf]
            if len(pieces) == 1 and len(kinds) > 1:  # stored fused (Phi-3, Phi-2 GGUF): its parts by their sizes
                pieces = split_rows(pieces[0], [self._part_rows(k, cfg) for k in kinds], target)
            return [self._column(p, k, cfg, target) for p, k in zip(pieces, kinds, strict=True)]
        if leaf in ROW_PARALLEL:
            if attr == "bias":  # added once, by rank 0: the all-reduce sums the ranks' outputs
                return pieces if self.rank == 0 else [torch.zeros_like(p) for p in pieces]
            return [slice_columns(p, *self._input_columns(leaf, cfg), target) for p in pieces]
        if leaf in VOCAB_PARALLEL:
            return [self._even_rows(p, target) for p in pieces]
        return pieces

    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        return parallelize(model, self.group)

    def _part_rows(self, kind: str, cfg: ModelConfig) -> int:
        if kind == "q":
            return cfg.num_attention_heads * cfg.head_dim
        if kind == "kv":
            return cfg.num_key_value_heads * cfg.head_dim
        return cfg.intermediate_size

    def _column(self, piece: Piece, kind: str, cfg: ModelConfig, name: str) -> Piece:
        if kind == "mlp":
            return self._even_rows(piece, name)
        q_first, q_count, kv_first, kv_count = self.heads(cfg)
        first, count = (q_first, q_count) if kind == "q" else (kv_first, kv_count)
        return slice_rows(piece, first * cfg.head_dim, (first + count) * cfg.head_dim)

    def _input_columns(self, leaf: str, cfg: ModelConfig) -> tuple[int, int]:
        """[start, stop) of a row-parallel weight's inputs: this rank's heads' outputs, or intermediate features."""
        if leaf in ("o_proj", "dense"):
            first, count, _, _ = self.heads(cfg)
            return first * cfg.head_dim, (first + count) * cfg.head_dim
        n = cfg.intermediate_size // self.size
        return self.rank * n, (self.rank + 1) * n

    def _even_rows(self, piece: Piece, name: str) -> Piece:
        rows = piece.shape[0]
        if rows % self.size:
            raise InvalidRequestError(f"{name}: its {rows} rows do not split into {self.size} equal parts")
        n = rows // self.size
        return slice_rows(piece, self.rank * n, (self.rank + 1) * n)
