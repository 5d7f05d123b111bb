"""Mixtral: Mistral whose feed-forward is a sparse mixture of experts (top-k of `num_local_experts`, softmax router).

llama.cpp writes it as the "llama" architecture with expert counts, each layer's experts stacked in 3-D tensors
(n_expert, rows, cols); "{e}" in a name below is the expert index, and the loader splits those tensors per expert.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..errors import UnsupportedArchitectureError
from ..layers.moe import SparseMoeBlock
from .llama import FUSED as LLAMA_FUSED
from .llama import GGUF_TO_HF as LLAMA_GGUF_TO_HF
from .llama import LlamaDecoderLayer, LlamaModel
from .mistral import MistralForCausalLM

GGUF_TO_HF = {
    **{gguf: hf for gguf, hf in LLAMA_GGUF_TO_HF.items() if ".mlp." not in hf},
    "blk.{i}.ffn_gate_inp.weight": "model.layers.{i}.block_sparse_moe.gate.weight",
    "blk.{i}.ffn_gate_exps.weight": "model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight",
    "blk.{i}.ffn_down_exps.weight": "model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight",
    "blk.{i}.ffn_up_exps.weight": "model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight",
}
FUSED = {**LLAMA_FUSED, "w1": ("w13", 0), "w3": ("w13", 1)}
_SOFTMAX_GATING = 1  # GGUF expert_gating_func: 1 softmax, 2 sigmoid


def _int_option(extra: dict[str, Any], name: str) -> int:
    value = extra.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UnsupportedArchitectureError(f"Mixtral needs a positive integer {name}, got {value!r}")
    return value


def check_moe_config(cfg: ModelConfig) -> tuple[int, int]:
    """(num_local_experts, num_experts_per_tok), after checking the options this implementation follows."""
    num_experts = _int_option(cfg.extra, "num_local_experts")
    top_k = _int_option(cfg.extra, "num_experts_per_tok")
    if top_k > num_experts:
        raise UnsupportedArchitectureError(f"num_experts_per_tok ({top_k}) exceeds num_local_experts ({num_experts})")
    if cfg.extra.get("hidden_act", "silu") != "silu":
        raise UnsupportedArchitectureError(
            f"Mixtral experts support hidden_act 'silu', not {cfg.extra['hidden_act']!r}"
        )
    if cfg.extra.get("expert_gating_func", _SOFTMAX_GATING) != _SOFTMAX_GATING:
        raise UnsupportedArchitectureError("Mixtral supports softmax expert gating only")
    return num_experts, top_k


class MixtralSparseMoeBlock(SparseMoeBlock):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.hidden_size, cfg.intermediate_size, *check_moe_config(cfg))


class MixtralDecoderLayer(LlamaDecoderLayer):
    """Llama's layer with the experts in place of the MLP, under the checkpoints' name `block_sparse_moe`."""

    mlp_cls = MixtralSparseMoeBlock

    def __init__(self, cfg: ModelConfig, rotary, layer_idx: int) -> None:
        super().__init__(cfg, rotary, layer_idx)
        self.block_sparse_moe = self._modules.pop("mlp")

    def forward(self, x, positions, kv_cache, meta):
        x = x + self.self_attn(self.input_layernorm(x), positions, kv_cache, meta)
        return x + self.block_sparse_moe(self.post_attention_layernorm(x))


class MixtralModel(LlamaModel):
    layer_cls = MixtralDecoderLayer


class MixtralForCausalLM(MistralForCausalLM):
    gguf_to_hf = GGUF_TO_HF
    fused = FUSED
    model_cls = MixtralModel
