"""The GPU benchmark's models: the embedded GGUF, and Llama-shaped models with random weights built from a config
(no download): the published shapes of Llama 3.2 1B / 3B and Llama 3.1 8B, saved as a safetensors folder with the
embedded model's tokenizer (the prompts are token ids below its vocabulary, which every shape's exceeds)."""

from __future__ import annotations

import os
from pathlib import Path

LLAMA3_ROPE = dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192)  # fmt: skip
LLAMA3 = dict(vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
              rope_scaling=LLAMA3_ROPE, head_dim=None)  # fmt: skip

# hidden, intermediate, layers, heads, kv heads, tied embeddings: config.json of each published model
SHAPES = {
    "llama-3.2-1b": dict(LLAMA3, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True, head_dim=64),
    "llama-3.2-3b": dict(LLAMA3, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                         num_attention_heads=24, num_key_value_heads=8, tie_word_embeddings=True, head_dim=128),
    "llama-3.1-8b": dict(LLAMA3, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, head_dim=128),
}  # fmt: skip
RANDOM_STD = 0.02  # transformers' initializer_range: logits stay finite through every layer


def llama_config(shape: str):
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[shape], torch_dtype="bfloat16")


def build_random_llama(shape: str, folder: Path) -> Path:
    """`folder` with config.json, random bf16 weights (model.safetensors) and the embedded tokenizer; kept if there."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from mistralpy.loader.default_model import default_model_path

    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device("cuda"):  # the init of billions of weights, on the GPU this benchmark has
        model = LlamaForCausalLM(llama_config(shape)).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    path = default_model_path()
    AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).save_pretrained(folder)
    return folder
