"""Gemma: Llama with GeGLU (tanh GELU), RMSNorm scaling by (1 + weight), the token embedding scaled by sqrt(hidden),
a head_dim of its own (config `head_dim`) and tied embeddings.

llama.cpp's converter stores every norm weight + 1 (the factor itself) and, unlike Llama's, leaves q/k unpermuted."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..errors import UnsupportedArchitectureError
from ..layers.activation import gelu_tanh_and_mul
from ..layers.norm import GemmaRMSNorm
from ..layers.rotary import RotaryEmbedding
from .llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP, LlamaModel


class GemmaMLP(LlamaMLP):
    act = staticmethod(gelu_tanh_and_mul)


class GemmaDecoderLayer(LlamaDecoderLayer):
    mlp_cls = GemmaMLP
    norm_cls = GemmaRMSNorm


class GemmaModel(LlamaModel):
    layer_cls = GemmaDecoderLayer
    norm_cls = GemmaRMSNorm

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__(cfg, rotary)
        self.embed_scale = cfg.hidden_size**0.5

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        # as transformers: the normaliser is a float32 scalar cast to the hidden dtype (sqrt(3072) rounds in bf16)
        return x * torch.tensor(self.embed_scale, dtype=torch.float32).to(x.dtype)


class GemmaForCausalLM(LlamaForCausalLM):
    model_cls = GemmaModel
    # the config key naming the MLP activation, and the names meaning GELU's tanh approximation (transformers reads a
    # legacy "gelu" in a Gemma config as the tanh approximation, and Gemma 2's "gelu" as the exact GELU)
    activation_key = "hidden_act"
    tanh_gelu_names = frozenset({"gelu", "gelu_pytorch_tanh", "gelu_new"})

    def __init__(self, cfg: ModelConfig) -> None:
        self.check_config(cfg)
        super().__init__(cfg)

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        act = cfg.extra.get(cls.activation_key) or "gelu_pytorch_tanh"  # GGUF files name no activation
        if act not in cls.tanh_gelu_names:
            raise UnsupportedArchitectureError(
                f"{cfg.architecture}: unsupported {cls.activation_key} {act!r} (supported: tanh-approximated GELU)"
            )
        if cfg.extra.get("use_bidirectional_attention"):
            raise UnsupportedArchitectureError(f"{cfg.architecture}: bidirectional attention is not supported")

    @staticmethod
    def gguf_transform(hf_name: str, tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
        """Undo llama.cpp's converter: it stores (1 + weight) for every RMSNorm."""
        return tensor - 1 if hf_name.endswith("norm.weight") else tensor
