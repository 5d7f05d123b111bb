import math
from typing import Any

import gguf
import torch

from . import BASE_CONFIG, FamilySpec

# microsoft/Phi-3.5-mini-instruct's template
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def longrope_config(original: int, max_positions: int, head_dim: int = 16) -> dict[str, Any]:
    """Phi-3-128k style LongRoPE: distinct short and long factors per frequency (head_dim / 2 of each)."""
    n = head_dim // 2
    return dict(
        max_position_embeddings=max_positions,
        original_max_position_embeddings=original,
        rope_scaling={
            "type": "longrope",
            "short_factor": [1.0 + 0.15 * i for i in range(n)],
            "long_factor": [1.0 + 1.5 * i for i in range(n)],
        },
    )


def convert_phi3(tensors: dict[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
    """llama.cpp's Phi3MiniModel keeps qkv_proj and gate_up_proj fused, and adds the LongRoPE factors as tensors."""
    params = cfg.rope_parameters
    if params.get("rope_type") not in ("longrope", "su"):
        return tensors
    return {
        **tensors,
        "rope_factors_long.weight": torch.tensor(params["long_factor"], dtype=torch.float32),
        "rope_factors_short.weight": torch.tensor(params["short_factor"], dtype=torch.float32),
    }


def phi3_metadata(writer: gguf.GGUFWriter, cfg: Any) -> None:
    params = cfg.rope_parameters
    original = cfg.original_max_position_embeddings
    writer.add_rope_scaling_orig_ctx_len(original)
    rot_pct = params.get("partial_rotary_factor", 1.0)
    writer.add_rope_dimension_count(int(rot_pct * cfg.hidden_size) // cfg.num_attention_heads)
    writer.add_sliding_window(cfg.sliding_window or 0)  # the converter writes 0 for "no window"
    if params.get("rope_type") in ("longrope", "su"):
        scale = cfg.max_position_embeddings / original
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)


SPEC = FamilySpec(
    name="phi3",
    hf_class="Phi3ForCausalLM",
    config_class="Phi3Config",
    # LongRoPE as in Phi-3-mini-128k, with an original context (128) longer than the tests' sequences, so every test
    # runs on the short factors and the attention factor of a 4x extension; a 12-position window (Phi-3-mini-4k has
    # one) that the tests' prompts run past. tests/test_phi3_longrope.py covers sequences past the original context.
    config=dict(
        BASE_CONFIG,
        **longrope_config(original=128, max_positions=512),
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        sliding_window=12,
        pad_token_id=None,
        tie_word_embeddings=False,
    ),
    gguf_arch=gguf.MODEL_ARCH.PHI3,
    convert=convert_phi3,
    metadata=phi3_metadata,
    chat_template=PHI3_CHAT_TEMPLATE,
)
