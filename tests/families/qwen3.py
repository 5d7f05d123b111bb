from pathlib import Path

import gguf

from . import BASE_CONFIG, FamilySpec

# the real template, which llama.cpp's converter copies into GGUF metadata (the file's first line names its source)
_, CHAT_TEMPLATE = (
    (Path(__file__).parents[1] / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8").split("\n", 1)
)

SPEC = FamilySpec(
    name="qwen3",
    hf_class="Qwen3ForCausalLM",
    config_class="Qwen3Config",
    # head_dim 32, not hidden_size / heads = 16 (Qwen3's q_proj is wider than the hidden size); the converter writes
    # it as attention.key_length / value_length and changes no tensor (NEOX rotary layout).
    config=dict(
        BASE_CONFIG,
        head_dim=32,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
        attention_bias=False,
    ),
    gguf_arch=gguf.MODEL_ARCH.QWEN3,
    chat_template=CHAT_TEMPLATE,
)
