"""Llama (1/2/3, SmolLM): RMSNorm, RoPE, GQA attention, SwiGLU MLP.

The other families subclass these classes: each part a family changes is a class attribute or a method here."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ModelLoadError
from ..layers.activation import silu_and_mul
from ..layers.attention import Attention, AttentionMetadata
from ..layers.decoder_stack import DecoderStack, StackLayer
from ..layers.embedding import VocabEmbedding
from ..layers.linear import Linear
from ..layers.native import NativeLayer
from ..layers.norm import RMSNorm
from ..layers.rotary import RotaryEmbedding

# GGUF tensor names -> Hugging Face names ("{i}" is the layer index).
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
# Tensors a GGUF file may carry that are not weights of ours (rope_freqs is read into ModelConfig).
GGUF_IGNORED = {"rope_freqs.weight"}
# Hugging Face projections that this model stores fused: (fused name, part name, position).
FUSED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer_idx: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        bias = bool(cfg.extra.get("attention_bias", False))
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=bias)
        self.o_proj = Linear(self.q_size, cfg.hidden_size, bias=bias)
        self.rotary = rotary
        self.attn = Attention(sliding_window=cfg.sliding_window_of(layer_idx))

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(positions, q, k)
        return self.o_proj(self.attn(q, k, v, kv_cache, meta).flatten(1))


class LlamaMLP(nn.Module, NativeLayer):
    act = staticmethod(silu_and_mul)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x), self.native))


class LlamaDecoderLayer(nn.Module):
    attention_cls: type[nn.Module] = LlamaAttention
    mlp_cls: type[nn.Module] = LlamaMLP
    norm_cls: type[nn.Module] = RMSNorm

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = self.norm_cls(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = self.attention_cls(cfg, rotary, layer_idx)
        self.post_attention_layernorm = self.norm_cls(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = self.mlp_cls(cfg)

    def forward(self, x, positions, kv_cache, meta) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, kv_cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))

    def stack_layer(self) -> StackLayer | None:
        """This layer for the native DecoderStack, if it computes exactly `LlamaDecoderLayer.forward`: a family
        that changes a forward, the norm, the activation or the attention's options runs the per-layer path."""
        if type(self).forward is not LlamaDecoderLayer.forward:
            return None
        attn, mlp = self.self_attn, self.mlp
        norms = (self.input_layernorm, self.post_attention_layernorm)
        exact = (
            type(attn).forward is LlamaAttention.forward
            and type(mlp).forward is LlamaMLP.forward
            and mlp.act is silu_and_mul
            and all(type(n) is RMSNorm for n in norms)
            and type(attn.attn) is Attention
            and attn.attn.scale is None
            and attn.attn.softcap is None
            and attn.rotary.rotary_dim == attn.head_dim
        )
        if not exact:
            return None
        window = attn.attn.sliding_window
        eps = norms[0].eps if norms[0].eps == norms[1].eps else None
        return StackLayer(
            norms[0].weight, attn.qkv_proj, attn.o_proj, norms[1].weight, mlp.gate_up_proj, mlp.down_proj, window, eps
        )


class LlamaModel(nn.Module):
    layer_cls: type[nn.Module] = LlamaDecoderLayer
    norm_cls: type[nn.Module] = RMSNorm

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(self.layer_cls(cfg, rotary, i) for i in range(cfg.num_hidden_layers))
        self.norm = self.norm_cls(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary, self.config = rotary, cfg
        self._stack: DecoderStack | None = None  # built on the first decode step (the weights are loaded then)
        self._stack_checked = False
        self.stack_allowed = True  # off where the layers span devices (engine/layer_placement.py)

    def decode_stack(self) -> DecoderStack | None:
        """The native stack of all layers, or None where some layer or weight does not qualify."""
        if not self.stack_allowed:
            return None
        if not self._stack_checked:
            parts = [layer.stack_layer() for layer in self.layers]
            cfg = self.config
            args = (self.rotary, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
            self._stack = None if None in parts else DecoderStack.build(parts, *args)
            self._stack_checked = True
        return self._stack

    def forget_decode_stack(self) -> None:
        """The next decode step checks the layers again (the stack holds the weight tensors themselves)."""
        self._stack, self._stack_checked = None, False

    def _apply(self, fn, recurse=True):
        self.forget_decode_stack()
        return super()._apply(fn, recurse)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(self, input_ids, positions, kv_caches, meta) -> torch.Tensor:
        x = self.embed(input_ids)
        stack = self.decode_stack() if DecoderStack.runs(x, meta) else None
        if stack is not None:
            return self.norm(stack(x, positions, kv_caches, meta))
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, positions, kv_cache, meta)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    gguf_to_hf = GGUF_TO_HF
    gguf_ignored = GGUF_IGNORED
    fused = FUSED
    model_cls: type[nn.Module] = LlamaModel

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.rotary = self.make_rotary(cfg)
        self.model = self.model_cls(cfg, self.rotary)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size)

    @staticmethod
    def make_rotary(cfg: ModelConfig) -> RotaryEmbedding:
        return RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling, cfg.extra.get("rope_freqs")
        )

    def forward(self, input_ids, positions, kv_caches, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: (T,) -> final hidden states (T, hidden)."""
        return self.model(input_ids, positions, kv_caches, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is None:
            return self.model.embed_tokens.logits(hidden)
        return self.lm_head(hidden)

    @staticmethod
    def gguf_transform(hf_name: str, tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
        """llama.cpp's converter interleaves the rotary halves of q/k rows; undo it to the HF layout."""
        if hf_name.endswith("q_proj.weight"):
            return unpermute_rotary(tensor, cfg.num_attention_heads, hf_name)
        if hf_name.endswith("k_proj.weight"):
            return unpermute_rotary(tensor, cfg.num_key_value_heads, hf_name)
        return tensor


def unpermute_rotary(w: torch.Tensor, n_heads: int, name: str = "a q/k projection") -> torch.Tensor:
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ModelLoadError(f"the {rows} rows of {name} are not {n_heads} heads of rotary pairs")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)
