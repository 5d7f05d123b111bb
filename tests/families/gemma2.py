from typing import Any

import gguf

from . import BASE_CONFIG, FamilySpec
from .gemma import GEMMA_CHAT_TEMPLATE, convert_gemma, gemma_metadata


def _metadata(writer: gguf.GGUFWriter, cfg: Any) -> None:
    gemma_metadata(writer, cfg)
    writer.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
    writer.add_final_logit_softcapping(cfg.final_logit_softcapping)
    writer.add_sliding_window(cfg.sliding_window)


SPEC = FamilySpec(
    name="gemma2",
    hf_class="Gemma2ForCausalLM",
    config_class="Gemma2Config",
    # 4 layers (sliding, global, sliding, global) with a 12-position window: the tests' prompts (26+ tokens) run
    # past it. Caps (distinct, to catch a swap) small enough to change this tiny model's scores and logits.
    # query_pre_attn_scalar is the head size, as in every Gemma 2 but the 27B: GGUF files do not carry it.
    config=dict(
        BASE_CONFIG,
        num_hidden_layers=4,
        head_dim=32,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=32,
        sliding_window=12,
        attn_logit_softcapping=10.0,
        final_logit_softcapping=5.0,
        tie_word_embeddings=True,
    ),
    gguf_arch=gguf.MODEL_ARCH.GEMMA2,
    convert=convert_gemma,
    metadata=_metadata,
    chat_template=GEMMA_CHAT_TEMPLATE,
)
