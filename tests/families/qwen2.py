from pathlib import Path

import gguf

from . import BASE_CONFIG, FamilySpec

# the real template, which llama.cpp's converter copies into GGUF metadata (the file's first line names its source)
_, CHAT_TEMPLATE = (
    (Path(__file__).parents[1] / "chat_templates" / "qwen2.jinja").read_text(encoding="utf-8").split("\n", 1)
)

SPEC = FamilySpec(
    name="qwen2",
    hf_class="Qwen2ForCausalLM",
    config_class="Qwen2Config",
    # as released Qwen2 checkpoints: a window configured but switched off (use_sliding_window false); tied
    # embeddings as in Qwen2-0.5B. llama.cpp's converter changes no tensor (NEOX rotary layout) and writes no window.
    config=dict(
        BASE_CONFIG,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        use_sliding_window=False,
        sliding_window=12,
        max_window_layers=1,
    ),
    gguf_arch=gguf.MODEL_ARCH.QWEN2,
    chat_template=CHAT_TEMPLATE,
)
