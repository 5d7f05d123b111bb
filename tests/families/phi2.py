from typing import Any

import gguf

from . import BASE_CONFIG, FamilySpec


def _metadata(writer: gguf.GGUFWriter, cfg: Any) -> None:
    # as llama.cpp's Phi2Model: LayerNorm epsilon, and the rotated features per head from partial_rotary_factor
    writer.add_layer_norm_eps(cfg.layer_norm_eps)
    rot_pct = cfg.rope_parameters["partial_rotary_factor"]
    writer.add_rope_dimension_count(int(rot_pct * cfg.hidden_size) // cfg.num_attention_heads)


SPEC = FamilySpec(
    name="phi2",
    hf_class="PhiForCausalLM",
    config_class="PhiConfig",
    # as microsoft/phi-2: 40% of each head rotates (6 of 16 features here), no GQA, an MLP 4x the hidden size (what
    # llama.cpp's converter writes as feed_forward_length), gelu_new. The converter keeps q/k/v separate and changes
    # no tensor (llama.cpp runs Phi-2 with neox rotary).
    config=dict(
        BASE_CONFIG,
        num_key_value_heads=4,
        intermediate_size=256,
        partial_rotary_factor=0.4,
        layer_norm_eps=1e-5,
        hidden_act="gelu_new",
        rope_theta=10000.0,
        tie_word_embeddings=False,
    ),
    gguf_arch=gguf.MODEL_ARCH.PHI2,
    metadata=_metadata,
)
