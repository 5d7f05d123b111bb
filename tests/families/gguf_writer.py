"""Write a Hugging Face folder as a GGUF file the way llama.cpp's converter does, with the `gguf` package's writer and
its HF -> GGUF tensor-name map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from safetensors import safe_open

from mistralpy.loader.default_model import default_model_path

from . import FamilySpec


def read_folder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors as saved on disk (checkpoint names, which may differ from a live transformers module's)."""
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors


def write_gguf(
    family: FamilySpec, folder: Path, cfg: Any, path: Path, qtype: gguf.GGMLQuantizationType | None = None
) -> None:
    """`qtype` (e.g. Q8_0) stores every 2-D and 3-D weight but the token embedding in that type; the rest stays F32."""
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[family.gguf_arch])
    _common_metadata(writer, cfg)
    family.metadata(writer, cfg)
    copy_tokenizer(writer, default_model_path(), family.chat_template)
    names = gguf.get_tensor_name_map(family.gguf_arch, cfg.num_hidden_layers)
    tensors = family.convert(read_folder_tensors(folder), cfg)
    for name, tensor in tensors.items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise KeyError(f"no GGUF name for {name} in {family.gguf_arch.name}")
        data = np.ascontiguousarray(tensor.float().numpy())
        if qtype is None or data.ndim < 2 or gguf_name.startswith("token_embd"):
            writer.add_tensor(gguf_name, data)
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def rope_theta(cfg: Any) -> float:
    """The base of the (global layers') rotary embedding: Gemma 3's rope_parameters are keyed by layer type."""
    params = getattr(cfg, "rope_parameters", None) or {}
    params = params.get("full_attention", params)
    return float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))


def _common_metadata(writer: gguf.GGUFWriter, cfg: Any) -> None:
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    writer.add_rope_freq_base(rope_theta(cfg))
    writer.add_vocab_size(cfg.vocab_size)
    if getattr(cfg, "rms_norm_eps", None) is not None:
        writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    head_dim = getattr(cfg, "head_dim", None)
    if head_dim is not None and head_dim != cfg.hidden_size // cfg.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def copy_tokenizer(writer: gguf.GGUFWriter, source: str, chat_template: str | None) -> None:
    f = gguf.GGUFReader(source).fields
    writer.add_tokenizer_model(f["tokenizer.ggml.model"].contents())
    writer.add_tokenizer_pre(f["tokenizer.ggml.pre"].contents())
    writer.add_token_list(f["tokenizer.ggml.tokens"].contents())
    writer.add_token_types(f["tokenizer.ggml.token_type"].contents())
    writer.add_token_merges(f["tokenizer.ggml.merges"].contents())
    writer.add_bos_token_id(f["tokenizer.ggml.bos_token_id"].contents())
    writer.add_eos_token_id(f["tokenizer.ggml.eos_token_id"].contents())
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template or f["tokenizer.chat_template"].contents())


def permute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's Llama converter interleaves the rotary halves of each q/k head's rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def permute_llama_qk(tensors: dict[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in tensors.items():
        if name.endswith("q_proj.weight"):
            t = permute_rotary(t, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            t = permute_rotary(t, cfg.num_key_value_heads)
        out[name] = t
    return out
