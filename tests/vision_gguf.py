"""The tiny Gemma 3 VLM as llama.cpp's converter writes it: a text GGUF (convert_hf_to_gguf.py's Gemma 3 text model,
with the vocabulary's three image tokens) and a separate projector GGUF (its --mmproj output: clip.* metadata, v.* and
mm.* tensors, mm.soft_emb_norm stored as 1 + w, the input projection as F16, the embeddings F32)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from mistralpy.loader.default_model import default_model_path

from .families import spec
from .families.gguf_writer import _common_metadata
from .vision_model import IMAGE_TOKENS

MMPROJ_NAMES = {"vision_tower.": "vision_tower.vision_model."}  # the Hub's names, which gguf's tensor map knows


def write_text_gguf(reference, path: Path) -> None:
    cfg = reference.config.text_config
    family = spec("gemma3")
    writer = gguf.GGUFWriter(str(path), "gemma3")
    _common_metadata(writer, cfg)
    family.metadata(writer, cfg)
    writer.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
    _tokenizer(writer, family.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg.num_hidden_layers)
    state = {f"model.{k}": v for k, v in reference.model.language_model.state_dict().items()}
    for name, tensor in family.convert(state, cfg).items():
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), tensor.float().numpy())
    _finish(writer)


def write_mmproj(reference, path: Path) -> None:
    cfg, vision = reference.config, reference.config.vision_config
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_clip_has_vision_encoder(True)
    writer.add_vision_projection_dim(cfg.text_config.hidden_size)
    writer.add_vision_image_size(vision.image_size)
    writer.add_vision_patch_size(vision.patch_size)
    writer.add_vision_embedding_length(vision.hidden_size)
    writer.add_vision_feed_forward_length(vision.intermediate_size)
    writer.add_vision_block_count(vision.num_hidden_layers)
    writer.add_vision_head_count(vision.num_attention_heads)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_clip_projector_type(gguf.VisionProjectorType.GEMMA3)
    writer.add_vision_attention_layernorm_eps(vision.layer_norm_eps)
    writer.add_vision_use_gelu(True)
    writer.add_vision_projector_scale_factor(
        (vision.image_size // vision.patch_size) // int(cfg.mm_tokens_per_image**0.5)
    )
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, vision.num_hidden_layers)
    for name, tensor in reference.model.state_dict().items():
        if not name.startswith(("vision_tower.", "multi_modal_projector.")):
            continue
        for old, new in MMPROJ_NAMES.items():
            name = new + name[len(old) :] if name.startswith(old) else name
        name = name.replace("_weight", ".weight")
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        data = tensor.float() + (1 if "soft_emb_norm" in name else 0)
        dtype = np.float16 if "input_projection" in name else np.float32
        writer.add_tensor(gguf_name, np.ascontiguousarray(data.numpy().astype(dtype)))
    _finish(writer)


def _tokenizer(writer: gguf.GGUFWriter, chat_template: str) -> None:
    f = gguf.GGUFReader(default_model_path()).fields
    tokens = list(f["tokenizer.ggml.tokens"].contents()) + list(IMAGE_TOKENS)
    types = list(f["tokenizer.ggml.token_type"].contents()) + [gguf.TokenType.CONTROL] * len(IMAGE_TOKENS)
    writer.add_tokenizer_model(f["tokenizer.ggml.model"].contents())
    writer.add_tokenizer_pre(f["tokenizer.ggml.pre"].contents())
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(f["tokenizer.ggml.merges"].contents())
    writer.add_bos_token_id(f["tokenizer.ggml.bos_token_id"].contents())
    writer.add_eos_token_id(f["tokenizer.ggml.eos_token_id"].contents())
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def swap_mlp_names(path: Path, out: Path) -> None:
    """A copy of a projector file with ffn_up and ffn_down named the other way round (llama.cpp's first Gemma 3
    script wrote them so)."""
    reader = gguf.GGUFReader(str(path))
    writer = gguf.GGUFWriter(str(out), "clip")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        writer.add_key_value(
            field.name, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None
        )
    for t in reader.tensors:
        name = t.name.replace("ffn_up", "FFN").replace("ffn_down", "ffn_up").replace("FFN", "ffn_down")
        writer.add_tensor(name, np.asarray(t.data).reshape(list(reversed(t.shape.tolist()))), raw_dtype=t.tensor_type)
    _finish(writer)
