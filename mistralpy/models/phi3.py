"""Phi-3 (Phi-3.5, Phi-4-mini): Llama whose checkpoints already hold qkv_proj and gate_up_proj fused, with LongRoPE
scaling, partial rotary and a sliding window when configured.

LongRoPE takes short factors for a sequence within the original context (original_max_position_embeddings) and long
ones beyond it. transformers decides per forward pass by the sequence length so far, so its generate() prefills a
prompt with the factors its length calls for and gives each new token those of the length reached. We decide the same
way, per request and per token: a prompt token by its prompt's length, however the scheduler chunks the prompt, and a
generated token by the sequence length at that token (`rope_sequence_lengths`). A batch never mixes its requests'
choices, unlike older vLLM, which took the long factors for a whole batch as soon as any of its positions passed the
original length; current vLLM instead takes the long factors for every request when max_model_len exceeds the original
length, which keeps caches consistent but departs from transformers on short sequences.
One departure from transformers remains: when a generation crosses the original length, transformers recomputes the
whole cache with the long factors; here earlier tokens keep their short-factor keys. (Prefix-cache blocks are not
shared between short- and long-factor requests: see Request.prefix_root.)
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..errors import UnsupportedArchitectureError
from ..layers.attention import AttentionMetadata
from ..layers.rotary import RotaryEmbedding, rope_type
from .llama import GGUF_TO_HF as LLAMA_GGUF_TO_HF
from .llama import LlamaForCausalLM
from .phi2 import rotary_dim

# llama.cpp writes attn_qkv fused, and ffn_up holding gate and up (in that order), as the HF checkpoint has them.
GGUF_TO_HF = {
    **{k: v for k, v in LLAMA_GGUF_TO_HF.items() if ".ffn_gate." not in k and ".ffn_up." not in k},
    "blk.{i}.attn_qkv.weight": "model.layers.{i}.self_attn.qkv_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.gate_up_proj.weight",
}
# LongRoPE factors, which gguf.py reads into ModelConfig.rope_scaling.
GGUF_IGNORED = {"rope_factors_long.weight", "rope_factors_short.weight"}


def rope_scaling(cfg: ModelConfig) -> dict | None:
    """transformers 4 configs keep original_max_position_embeddings beside rope_scaling, not in it."""
    scaling = cfg.rope_scaling
    if rope_type(scaling) not in ("longrope", "su"):
        return scaling
    return {"original_max_position_embeddings": cfg.extra.get("original_max_position_embeddings"), **scaling}


def rope_sequence_lengths(positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
    """Per token, the sequence length that picks its LongRoPE factors: the larger of its prompt's length and its own
    position + 1. Without prompt lengths (a caller that steps the model itself), each request's length after this
    step, as transformers sees it in a forward pass over a cache."""
    if meta.prompt_lens is not None:
        return torch.maximum(meta.prompt_lens, positions + 1)
    lens = [meta.decode_lens] if meta.num_decode_tokens else []
    lens += [torch.full((span.num_tokens,), span.context_len) for span in meta.prefills]
    return torch.cat(lens)


class Phi3ForCausalLM(LlamaForCausalLM):
    gguf_to_hf = GGUF_TO_HF
    gguf_ignored = GGUF_IGNORED

    def __init__(self, cfg: ModelConfig) -> None:
        act = cfg.extra.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedArchitectureError(f"unsupported Phi-3 activation {act!r} (supported: silu)")
        super().__init__(cfg)

    @staticmethod
    def make_rotary(cfg: ModelConfig) -> RotaryEmbedding:
        return RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, rope_scaling(cfg), rotary_dim=rotary_dim(cfg)
        )

    def forward(self, input_ids, positions, kv_caches, meta: AttentionMetadata) -> torch.Tensor:
        if self.rotary.long_rows_start is not None:
            positions = self.rotary.rows(positions, rope_sequence_lengths(positions, meta))
        return self.model(input_ids, positions, kv_caches, meta)

    @staticmethod
    def gguf_transform(hf_name: str, tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
        return tensor  # llama.cpp runs Phi-3 with neox rotary: q/k rows keep the HF layout
