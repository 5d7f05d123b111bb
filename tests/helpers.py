"""Test helpers: tiny random Llama models as HF folders and GGUF files, and the embedded model's location."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
import torch

from mistralpy.loader.default_model import default_model_path

from . import machine
from .families import BASE_CONFIG
from .families.gguf_writer import copy_tokenizer, permute_llama_qk


def save_tokenizer(folder: Path) -> None:
    """The embedded model's tokenizer (via transformers, the oracle) as tokenizer.json + tokenizer_config.json."""
    from transformers import AutoTokenizer

    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    tok.save_pretrained(folder)


def make_tiny_llama(folder: Path, seed: int = 0, tie: bool = False, **overrides) -> torch.nn.Module:
    """A random 2-layer Llama with the embedded model's vocabulary, saved as an HF folder (safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs = dict(BASE_CONFIG, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kwargs)).eval()
    model.save_pretrained(folder)
    return model


Q = gguf.GGMLQuantizationType
# byte offsets of each block's f16 fields: random bytes there could be inf/nan, so they get finite values
F16_FIELDS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}  # fmt: skip


def random_blocks(qtype, rows: int, cols: int, seed: int = 0, std: float | None = None) -> np.ndarray:
    """Random valid GGUF blocks of `qtype` for a (rows, cols) tensor; `std`: their f16 scales rescaled so that the
    dequantized weights have about this standard deviation (a model made of them stays numerically tame)."""
    rng = np.random.default_rng(seed)
    if qtype in (Q.F32, Q.F16, Q.BF16):
        return gguf.quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype).view(np.uint8)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block_size, type_size), dtype=np.uint8)
    for offset in F16_FIELDS[qtype]:
        scale = (0.05 * rng.standard_normal((blocks.shape[0], 1))).astype(np.float16)
        blocks[:, offset : offset + 2] = scale.view(np.uint8)
    blocks = blocks.reshape(rows, -1)
    if std is not None:
        factor = std / float(gguf.quants.dequantize(blocks, qtype).std())
        flat = blocks.reshape(-1, type_size)
        for offset in F16_FIELDS[qtype]:
            field = np.ascontiguousarray(flat[:, offset : offset + 2]).view(np.float16)
            flat[:, offset : offset + 2] = (field.astype(np.float32) * factor).astype(np.float16).view(np.uint8)
    return blocks


def llama_to_gguf(
    hf_model: torch.nn.Module,
    path: Path,
    tokenizer_gguf: str | None = None,
    qtypes: dict[str, gguf.GGMLQuantizationType] | None = None,
    random_blocks_for: frozenset | set = frozenset(),
) -> None:
    """Write an HF Llama to GGUF as llama.cpp's converter does (F32, q/k rows permuted for interleaved RoPE).

    `qtypes` maps a GGUF tensor-name fragment (e.g. "attn_v", "token_embd") to the type to store it in. Tensors of a
    type in `random_blocks_for` (gguf-py cannot quantize the K-quants) get random blocks instead, with
    the weights' standard deviation: the file is then a different model from `hf_model`."""
    cfg = hf_model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    copy_tokenizer(writer, tokenizer_gguf or default_model_path(), None)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, tensor in permute_llama_qk(hf_model.state_dict(), cfg).items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = tensor.float().numpy()
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        qtype = next((t for frag, t in (qtypes or {}).items() if frag in gguf_name), None)
        if qtype is None or data.ndim != 2:
            writer.add_tensor(gguf_name, np.ascontiguousarray(data))
        elif qtype in random_blocks_for:
            rows, cols = data.shape
            blocks = random_blocks(qtype, rows, cols, seed=len(gguf_name), std=float(data.std()))
            writer.add_tensor(gguf_name, blocks, raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def group32_linear_cls() -> type:
    """The class the loader must pick for GGUF types with groups of 32 on this machine (tests/machine.py): the native
    kernel where the CPU has AVX-512 BF16 and VNNI, else torch's int4 kernel."""
    from mistralpy.quant.int4_linear import Int4PackLinear
    from mistralpy.quant.native_linear import NativeQuantLinear

    return NativeQuantLinear if machine.NATIVE_QMATMUL else Int4PackLinear


def quantized_linear_cls(qtype) -> type:
    """The class the loader must pick for a GGUF type on this machine: the native kernel where the machine has it
    (every group-quantized type), else torch's int4 kernel for groups of 32, else blocks plus a dense copy."""
    from mistralpy.quant.int4_linear import INT4_TYPES
    from mistralpy.quant.native_linear import NATIVE_TYPES, NativeQuantLinear
    from mistralpy.quant.quantized_linear import DenseLinear

    if qtype in NATIVE_TYPES and machine.NATIVE_QMATMUL:
        return NativeQuantLinear
    return group32_linear_cls() if qtype in INT4_TYPES else DenseLinear
