"""Qwen3: Qwen2's window rules, with an RMSNorm over each q and k head (before the rotary embedding), an explicit
`head_dim`, and q/k/v/o biases only when `attention_bias` says so (Llama's option) instead of Qwen2's fixed q/k/v ones.

llama.cpp's converter writes Qwen3 tensors unchanged (NEOX rotary layout), head_dim as attention.key_length."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..layers.attention import AttentionMetadata
from ..layers.norm import RMSNorm
from .llama import GGUF_TO_HF, LlamaAttention, LlamaDecoderLayer, LlamaModel
from .qwen2 import Qwen2ForCausalLM

QWEN3_GGUF_TO_HF = {
    **GGUF_TO_HF,
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}


class Qwen3Attention(LlamaAttention):
    qk_norm_cls: type[RMSNorm] = RMSNorm

    def __init__(self, cfg: ModelConfig, rotary, layer_idx: int) -> None:
        super().__init__(cfg, rotary, layer_idx)
        self.q_norm = self.qk_norm_cls(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = self.qk_norm_cls(self.head_dim, cfg.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = self.q_norm(q.view(-1, self.num_heads, self.head_dim))
        k = self.k_norm(k.view(-1, self.num_kv_heads, self.head_dim))
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(positions, q, k)
        return self.o_proj(self.attn(q, k, v, kv_cache, meta).flatten(1))


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_cls = Qwen3Attention


class Qwen3Model(LlamaModel):
    layer_cls = Qwen3DecoderLayer


class Qwen3ForCausalLM(Qwen2ForCausalLM):
    gguf_to_hf = QWEN3_GGUF_TO_HF
    model_cls = Qwen3Model
