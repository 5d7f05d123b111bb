"""Phi-2: attention and MLP side by side on one LayerNorm (with bias), partial rotary, a plain GELU MLP (fc1 / fc2),
biases on every projection, an untied lm_head with a bias, and a final LayerNorm (`final_layernorm`)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import UnsupportedArchitectureError
from ..layers.activation import gelu_tanh
from ..layers.linear import Linear
from ..layers.norm import LayerNorm
from ..layers.rotary import RotaryEmbedding
from .llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel

# llama.cpp writes HF-format checkpoints with separate q/k/v; files of the older "mixformer" checkpoints hold attn_qkv.
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.final_layernorm.weight",
    "output_norm.bias": "model.final_layernorm.bias",
    "output.weight": "lm_head.weight",
    "output.bias": "lm_head.bias",
    **{
        f"blk.{{i}}.{gguf}.{attr}": f"model.layers.{{i}}.{hf}.{attr}"
        for gguf, hf in {
            "attn_norm": "input_layernorm",
            "attn_qkv": "self_attn.qkv_proj",
            "attn_q": "self_attn.q_proj",
            "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.dense",
            "ffn_up": "mlp.fc1",
            "ffn_down": "mlp.fc2",
        }.items()
        for attr in ("weight", "bias")
    },
}
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")


def rotary_dim(cfg: ModelConfig, default_factor: float = 1.0) -> int:
    """The rotated features of each head: GGUF stores their count, HF configs a fraction of head_dim."""
    if "rope.dimension_count" in cfg.extra:
        return int(cfg.extra["rope.dimension_count"])
    return int(cfg.head_dim * cfg.extra.get("partial_rotary_factor", default_factor))


def layer_norm_eps(cfg: ModelConfig) -> float:
    return float(cfg.extra.get("layer_norm_eps", 1e-5))


class Phi2Attention(LlamaAttention):
    """Llama's attention with biases on q/k/v (fused here) and on the output projection, which Phi-2 calls `dense`."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer_idx: int) -> None:
        super().__init__(cfg, rotary, layer_idx)
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=True)
        del self.o_proj
        self.dense = Linear(self.q_size, cfg.hidden_size, bias=True)

    def forward(self, x, positions, kv_cache, meta) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(positions, q, k)
        return self.dense(self.attn(q, k, v, kv_cache, meta).flatten(1))


class Phi2MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc1 = Linear(cfg.hidden_size, cfg.intermediate_size, bias=True)
        self.fc2 = Linear(cfg.intermediate_size, cfg.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class Phi2DecoderLayer(LlamaDecoderLayer):
    attention_cls = Phi2Attention
    mlp_cls = Phi2MLP

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer_idx: int) -> None:
        super().__init__(cfg, rotary, layer_idx)
        self.input_layernorm = LayerNorm(cfg.hidden_size, layer_norm_eps(cfg))
        del self.post_attention_layernorm  # one norm feeds both branches

    def forward(self, x, positions, kv_cache, meta) -> torch.Tensor:
        h = self.input_layernorm(x)
        return x + self.self_attn(h, positions, kv_cache, meta) + self.mlp(h)


class Phi2Model(LlamaModel):
    layer_cls = Phi2DecoderLayer

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__(cfg, rotary)
        del self.norm
        self.final_layernorm = LayerNorm(cfg.hidden_size, layer_norm_eps(cfg))

    def forward(self, input_ids, positions, kv_caches, meta) -> torch.Tensor:
        x = self.embed(input_ids)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, positions, kv_cache, meta)
        return self.final_layernorm(x)


class Phi2ForCausalLM(LlamaForCausalLM):
    gguf_to_hf = GGUF_TO_HF
    model_cls = Phi2Model

    def __init__(self, cfg: ModelConfig) -> None:
        _check_supported(cfg)
        super().__init__(cfg)
        if self.lm_head is not None:
            self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=True)

    @staticmethod
    def make_rotary(cfg: ModelConfig) -> RotaryEmbedding:
        # transformers' PhiConfig defaults partial_rotary_factor to 0.5
        dim = rotary_dim(cfg, default_factor=0.5)
        return RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling, rotary_dim=dim
        )

    @staticmethod
    def gguf_transform(hf_name: str, tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
        return tensor  # llama.cpp runs Phi-2 with neox rotary: q/k rows keep the HF layout


def _check_supported(cfg: ModelConfig) -> None:
    if cfg.extra.get("qk_layernorm"):
        raise UnsupportedArchitectureError("Phi models with qk_layernorm are not supported")
    act = cfg.extra.get("hidden_act", "gelu_new")
    if act not in _GELU_TANH:
        raise UnsupportedArchitectureError(f"unsupported Phi-2 activation {act!r} (supported: {', '.join(_GELU_TANH)})")
