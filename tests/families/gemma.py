from typing import Any

import gguf
import torch

from . import BASE_CONFIG, FamilySpec

# google/gemma-2b-it's template (Gemma 2's instruction-tuned models use the same one)
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)


def convert_gemma(tensors: dict[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
    """llama.cpp's Gemma / Gemma 2 converters skip lm_head (tied) and store every RMSNorm weight as 1 + weight."""
    return {n: t + 1 if n.endswith("norm.weight") else t for n, t in tensors.items() if n != "lm_head.weight"}


def gemma_metadata(writer: gguf.GGUFWriter, cfg: Any) -> None:
    # the converter always writes the head size; the shared writer only when it differs from hidden / heads
    if cfg.head_dim == cfg.hidden_size // cfg.num_attention_heads:
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)


SPEC = FamilySpec(
    name="gemma",
    hf_class="GemmaForCausalLM",
    config_class="GemmaConfig",
    # head_dim 32 with 4 heads of a 64-wide hidden state: the head size is not hidden / heads
    config=dict(BASE_CONFIG, head_dim=32, rms_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True),
    gguf_arch=gguf.MODEL_ARCH.GEMMA,
    convert=convert_gemma,
    metadata=gemma_metadata,
    chat_template=GEMMA_CHAT_TEMPLATE,
)
