"""Qwen2: Llama with a bias on the q/k/v projections (none on o_proj), and sliding-window attention only where
`use_sliding_window` turns it on (transformers' rules: `layer_types`, else the layers from `max_window_layers` on).

llama.cpp's converter writes Qwen2 tensors unchanged (the NEOX rotary layout of HF checkpoints: no q/k permutation)
and no sliding window, so a GGUF Qwen2 attends globally in every layer, as in llama.cpp."""

from __future__ import annotations

import dataclasses

import torch

from ..config import ModelConfig
from ..layers.linear import Linear
from .llama import GGUF_TO_HF, LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel

QWEN2_GGUF_TO_HF = {
    **GGUF_TO_HF,
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
}
# transformers' Qwen2Config / Qwen3Config defaults for the window fields a config.json may leave out
_DEFAULT_SLIDING_WINDOW = 4096
_DEFAULT_MAX_WINDOW_LAYERS = 28


def qwen_window_config(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with Qwen's window fields spelled out in the vocabulary `ModelConfig.sliding_window_of` reads: an absent
    `use_sliding_window` means off, and without `layer_types` the layers from `max_window_layers` on slide."""
    extra = dict(cfg.extra)
    extra["use_sliding_window"] = bool(extra.get("use_sliding_window", False))
    if extra["use_sliding_window"]:
        if "sliding_window" not in extra:
            extra["sliding_window"] = _DEFAULT_SLIDING_WINDOW
        if extra.get("layer_types") is None:
            first = int(extra.get("max_window_layers", _DEFAULT_MAX_WINDOW_LAYERS))
            extra["layer_types"] = [
                "sliding_attention" if i >= first else "full_attention" for i in range(cfg.num_hidden_layers)
            ]
    return dataclasses.replace(cfg, extra=extra)


class Qwen2Attention(LlamaAttention):
    def __init__(self, cfg: ModelConfig, rotary, layer_idx: int) -> None:
        super().__init__(cfg, rotary, layer_idx)
        # fixed by the architecture (Qwen2 has no attention_bias option): q/k/v carry a bias, o_proj none
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=True)
        self.o_proj = Linear(self.q_size, cfg.hidden_size, bias=False)


class Qwen2DecoderLayer(LlamaDecoderLayer):
    attention_cls = Qwen2Attention


class Qwen2Model(LlamaModel):
    layer_cls = Qwen2DecoderLayer


class Qwen2ForCausalLM(LlamaForCausalLM):
    gguf_to_hf = QWEN2_GGUF_TO_HF
    model_cls = Qwen2Model

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(qwen_window_config(cfg))

    @staticmethod
    def gguf_transform(hf_name: str, tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
        return tensor  # NEOX rotary layout: llama.cpp stores q/k rows as HF does
