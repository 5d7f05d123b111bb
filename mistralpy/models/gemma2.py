"""Gemma 2: Gemma with soft-capped attention scores and final logits, sliding-window and global layers alternating,
norms after attention and around the MLP, and `query_pre_attn_scalar` ** -0.5 as the attention scale.

GGUF files carry the caps and the window but neither layer types nor the scalar: there llama.cpp's rules apply (even
layers slide; the scale is 1/sqrt(hidden / heads) for the 46-layer 27B model and 1/sqrt(head_dim) otherwise)."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..layers.attention import Attention
from ..layers.rotary import RotaryEmbedding
from .gemma import GemmaDecoderLayer, GemmaForCausalLM, GemmaModel
from .llama import GGUF_TO_HF as LLAMA_GGUF_TO_HF
from .llama import LlamaAttention

GGUF_TO_HF = {
    **LLAMA_GGUF_TO_HF,
    "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
}
# Used when a file lacks the key: llama.cpp's defaults for Gemma 2, also transformers' Gemma2Config defaults.
DEFAULT_SLIDING_WINDOW, DEFAULT_ATTN_SOFTCAP, DEFAULT_FINAL_SOFTCAP = 4096, 50.0, 30.0
LLAMA_CPP_27B_LAYERS = 46


def layer_window(cfg: ModelConfig, layer_idx: int) -> int | None:
    if "layer_types" in cfg.extra:
        return cfg.sliding_window_of(layer_idx)
    # no layer_types (GGUF, or a config written before transformers had them): even layers slide, as in llama.cpp
    window = cfg.extra.get("sliding_window", DEFAULT_SLIDING_WINDOW)
    return None if window is None or layer_idx % 2 else int(window)


def attention_scale(cfg: ModelConfig, big_layers: int = LLAMA_CPP_27B_LAYERS) -> float:
    """1/sqrt(query_pre_attn_scalar); a GGUF does not carry it: llama.cpp's rule (its 27B model, told by its number
    of layers, `big_layers`, scales by hidden_size / heads, the others by head_dim)."""
    scalar = cfg.extra.get("query_pre_attn_scalar")
    if scalar is None:
        big = cfg.num_hidden_layers == big_layers
        scalar = cfg.hidden_size // cfg.num_attention_heads if big else cfg.head_dim
    return float(scalar) ** -0.5


class Gemma2Attention(LlamaAttention):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer_idx: int) -> None:
        super().__init__(cfg, rotary, layer_idx)
        softcap = cfg.extra.get("attn_logit_softcapping", DEFAULT_ATTN_SOFTCAP)
        self.attn = Attention(attention_scale(cfg), layer_window(cfg, layer_idx), softcap)


class Gemma2DecoderLayer(GemmaDecoderLayer):
    attention_cls = Gemma2Attention

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer_idx: int) -> None:
        super().__init__(cfg, rotary, layer_idx)
        self.pre_feedforward_layernorm = self.norm_cls(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_feedforward_layernorm = self.norm_cls(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, positions, kv_cache, meta) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), positions, kv_cache, meta))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma2Model(GemmaModel):
    layer_cls = Gemma2DecoderLayer


class Gemma2ForCausalLM(GemmaForCausalLM):
    gguf_to_hf = GGUF_TO_HF
    model_cls = Gemma2Model
    activation_key = "hidden_activation"
    tanh_gelu_names = frozenset({"gelu_pytorch_tanh", "gelu_new"})
    default_final_softcap: float | None = DEFAULT_FINAL_SOFTCAP  # where the config has no final_logit_softcapping

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.final_softcap = cfg.extra.get("final_logit_softcapping", self.default_final_softcap)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().compute_logits(hidden)
        if self.final_softcap is None:
            return logits
        return torch.tanh(logits / self.final_softcap) * self.final_softcap
