import gguf

from . import BASE_CONFIG, FamilySpec
from .gguf_writer import permute_llama_qk


def _metadata(writer: gguf.GGUFWriter, cfg) -> None:
    # llama.cpp's converter writes Mistral as "llama"; a window is kept when the file carries one
    writer.add_sliding_window(cfg.sliding_window)


SPEC = FamilySpec(
    name="mistral",
    hf_class="MistralForCausalLM",
    config_class="MistralConfig",
    # a window of 12 positions: the tests' prompts (22+ tokens) run well past it
    config=dict(BASE_CONFIG, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=12, tie_word_embeddings=False),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    convert=permute_llama_qk,
    metadata=_metadata,
)
