import gguf

from . import BASE_CONFIG, FamilySpec
from .gguf_writer import permute_llama_qk

SPEC = FamilySpec(
    name="llama",
    hf_class="LlamaForCausalLM",
    config_class="LlamaConfig",
    config=dict(BASE_CONFIG, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    convert=permute_llama_qk,
)
