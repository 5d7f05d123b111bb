"""Gemma 3 (text): Gemma 2's four norms per layer, GeGLU and scaled embedding, with a (1 + weight) RMSNorm over each q
and k head, sliding-window ("local") and global layers in a pattern of 5 : 1, and a rotary embedding of each kind:
the local layers' base (rope_local_base_freq, 10k) without scaling, the global layers' rope_theta with its scaling
(linear in the 4B+ models). The final logits are soft-capped where the config sets final_logit_softcapping (no Gemma 3
does); attention scores never are (transformers stores attn_logit_softcapping but does not apply it: a config that sets
it is refused rather than read two ways).

GGUF files carry the window, the global base and its scaling, but neither the layer pattern, the local base nor the
attention scalar: there llama.cpp's rules apply (every 6th layer is global; base 10k; 1/sqrt(hidden / heads) for the
62-layer 27B model and 1/sqrt(head_dim) otherwise), unless the file has attention.sliding_window_pattern or
rope.freq_base_swa."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..errors import ModelLoadError, UnsupportedArchitectureError
from ..layers.attention import Attention
from ..layers.norm import GemmaRMSNorm
from ..layers.rotary import RotaryEmbedding, rope_type
from .gemma2 import GGUF_TO_HF as GEMMA2_GGUF_TO_HF
from .gemma2 import Gemma2DecoderLayer, Gemma2ForCausalLM, Gemma2Model, attention_scale
from .qwen3 import Qwen3Attention

GGUF_TO_HF = {
    **GEMMA2_GGUF_TO_HF,
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}
DEFAULT_PATTERN = 6  # transformers' and llama.cpp's: layers 0-4 slide, layer 5 is global, and so on
DEFAULT_LOCAL_THETA = 10000.0
LLAMA_CPP_27B_LAYERS = 62  # Gemma 3 27B (attention_scale)
LAYER_TYPES = ("sliding_attention", "full_attention")


def sliding_layers(cfg: ModelConfig) -> list[bool]:
    """Which layers slide: HF's layer_types, else a pattern (a period, or GGUF's per-layer booleans), else every
    layer but each 6th."""
    n = cfg.num_hidden_layers
    layer_types = cfg.extra.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or len(layer_types) != n or any(t not in LAYER_TYPES for t in layer_types):
            raise ModelLoadError(f"gemma3: layer_types must list {n} of {', '.join(LAYER_TYPES)}")
        return [t == "sliding_attention" for t in layer_types]
    pattern = cfg.extra.get("sliding_window_pattern", DEFAULT_PATTERN)
    if isinstance(pattern, list) and len(pattern) == n and all(isinstance(p, bool) for p in pattern):
        return list(pattern)
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern >= 1:
        return [(i + 1) % pattern != 0 for i in range(n)]
    raise ModelLoadError(f"gemma3: sliding_window_pattern must be a period >= 1 or {n} booleans, not {pattern!r}")


def local_rotary(cfg: ModelConfig) -> RotaryEmbedding:
    theta = cfg.extra.get("rope_local_base_freq")
    theta = DEFAULT_LOCAL_THETA if theta is None else theta
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
        raise ModelLoadError(f"gemma3: the local rotary base must be a positive number, not {theta!r}")
    scaling = cfg.extra.get("rope_local_scaling")
    if rope_type(scaling) in ("longrope", "su"):  # its rows depend on the prompt's length: the engine's rotary only
        raise UnsupportedArchitectureError("gemma3: longrope scaling of the local layers' rotary is not supported")
    return RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings, float(theta), scaling)


class Gemma3Rotaries(nn.Module):
    """The two rotary embeddings, shared by the layers of their kind (each looks its rows up once per step)."""

    def __init__(self, full: RotaryEmbedding, local: RotaryEmbedding) -> None:
        super().__init__()
        self.full, self.local = full, local


class Gemma3Attention(Qwen3Attention):
    qk_norm_cls = GemmaRMSNorm

    def __init__(self, cfg: ModelConfig, rotaries: Gemma3Rotaries, layer_idx: int) -> None:
        sliding = sliding_layers(cfg)[layer_idx]
        super().__init__(cfg, rotaries.local if sliding else rotaries.full, layer_idx)
        window = cfg.extra.get("sliding_window") if sliding else None
        self.attn = Attention(attention_scale(cfg, LLAMA_CPP_27B_LAYERS), None if window is None else int(window))


class Gemma3DecoderLayer(Gemma2DecoderLayer):
    attention_cls = Gemma3Attention


class Gemma3Model(Gemma2Model):
    layer_cls = Gemma3DecoderLayer

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__(cfg, Gemma3Rotaries(rotary, local_rotary(cfg)))


class Gemma3ForCausalLM(Gemma2ForCausalLM):
    """`rotary` (the engine's) is the global layers' embedding: the one whose scaling could pick tables per request."""

    gguf_to_hf = GGUF_TO_HF
    model_cls = Gemma3Model
    default_final_softcap = None

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        super().check_config(cfg)
        if cfg.extra.get("attn_logit_softcapping") is not None:
            raise UnsupportedArchitectureError(
                "gemma3: attn_logit_softcapping is not part of Gemma 3 (transformers' and llama.cpp's Gemma 3 do not "
                "apply it); remove it from the config"
            )
