"""TensorShard: what one rank of a tensor-parallel group holds of a model, decided per weight at load.

Megatron's split: q/k/v and gate/up are column-parallel (each rank computes its own attention heads and its own
slice of the MLP's intermediate features), o/down are row-parallel (each rank's partial sum, all-reduced), the token
embedding and the LM head are vocab-parallel. The model is built from the shard's config (heads / intermediate size
divided by the group size), so the attention, the rotary and the KV cache see a rank's heads only. Mixtral's experts
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
from .slicing import Piece, slice_columns, slice_rows, split_rows

COLUMN_PARTS = {  # a column-parallel module -> the kinds of the parts fused in it
    "qkv_proj": ("q", "kv", "kv"),
    "q_proj": ("q",),
    "k_proj": ("kv",),
    "v_proj": ("kv",),
    "gate_up_proj": ("mlp", "mlp"),
    "w13": ("mlp", "mlp"),
    "gate_proj": ("mlp",),
    "up_proj": ("mlp",),
    "fc1": ("mlp",),
    "w1": ("mlp",),
    "w3": ("mlp",),
}
ROW_PARALLEL = frozenset({"o_proj", "dense", "down_proj", "fc2", "w2"})
VOCAB_PARALLEL = frozenset({"embed_tokens", "lm_head"})


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
        kv = cfg.num_key_value_heads
        counts = {
            "num_attention_heads": cfg.num_attention_heads,
            "intermediate_size": cfg.intermediate_size,
            "vocab_size": cfg.vocab_size,
        }
        for name, value in counts.items():
            if value % self.size:
                raise InvalidRequestError(f"tensor_parallel_size {self.size} does not divide {name} ({value})")
        if kv % self.size and self.size % kv:
            raise InvalidRequestError(
                f"tensor_parallel_size {self.size} neither divides num_key_value_heads ({kv}) nor is a multiple of it"
            )

    def model_config(self, cfg: ModelConfig) -> ModelConfig:
        """The config a rank's model is built from: its heads and intermediate features (the vocabulary stays whole:
        the engine samples over all of it)."""
        return dataclasses.replace(
            cfg,
            num_attention_heads=cfg.num_attention_heads // self.size,
            num_key_value_heads=max(1, cfg.num_key_value_heads // self.size),
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
            return [slice_columns(p, self.rank, self.size, target) for p in pieces]
        if leaf in VOCAB_PARALLEL:
            return [self._even_rows(p, target) for p in pieces]
        return pieces

    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        from .parallel_layers import parallelize  # it reads this module's tables

        return parallelize(model, self.group)

    def _part_rows(self, kind: str, cfg: ModelConfig) -> int:
        if kind == "q":
            return cfg.num_attention_heads * cfg.head_dim
        if kind == "kv":
            return cfg.num_key_value_heads * cfg.head_dim
        return cfg.intermediate_size

    def _column(self, piece: Piece, kind: str, cfg: ModelConfig, name: str) -> Piece:
        kv = cfg.num_key_value_heads
        if kind != "kv" or kv >= self.size:
            return self._even_rows(piece, name)
        head = self.rank * kv // self.size  # fewer KV heads than ranks: the one this rank's query heads read
        return slice_rows(piece, head * cfg.head_dim, (head + 1) * cfg.head_dim)

    def _even_rows(self, piece: Piece, name: str) -> Piece:
        rows = piece.shape[0]
        if rows % self.size:
            raise InvalidRequestError(f"{name}: its {rows} rows do not split into {self.size} equal parts")
        n = rows // self.size
        return slice_rows(piece, self.rank * n, (self.rank + 1) * n)
