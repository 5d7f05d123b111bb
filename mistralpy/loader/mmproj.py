"""A llama.cpp multimodal projector file (`--mmproj`, as convert_hf_to_gguf.py --mmproj writes it) joined to a text
GGUF: the SigLIP tower and the Gemma 3 projector read from its clip.* metadata and v.* / mm.* tensors, the image
tokens found in the text file's vocabulary. Only Gemma 3's projector type is read; any other is refused by name.

llama.cpp's converter stores mm.soft_emb_norm as (1 + w) (Gemma's norm factor itself) and the input projection as
F16; files from its first Gemma 3 script named the MLP's two matrices the other way round (clip.cpp swaps them back
by shape, and so does this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError, UnsupportedArchitectureError
from ..gguf_metadata import get_float, get_int, get_list, get_str
from .gguf import GGUFFile

_GLOBAL = {
    "v.patch_embd.weight": "vision_tower.embeddings.patch_embedding.weight",
    "v.patch_embd.bias": "vision_tower.embeddings.patch_embedding.bias",
    "v.position_embd.weight": "vision_tower.embeddings.position_embedding.weight",
    "v.post_ln.weight": "vision_tower.post_layernorm.weight",
    "v.post_ln.bias": "vision_tower.post_layernorm.bias",
    "mm.input_projection.weight": "multi_modal_projector.mm_input_projection_weight",
    "mm.soft_emb_norm.weight": "multi_modal_projector.mm_soft_emb_norm.weight",
}
_LAYER = {
    "ln1": "layer_norm1", "ln2": "layer_norm2", "attn_out": "self_attn.out_proj", "ffn_up": "mlp.fc1",
    "ffn_down": "mlp.fc2",
}  # fmt: skip
_QKV = ("attn_q", "attn_k", "attn_v")
IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")  # Gemma 3's vocabulary
DEFAULT_SCALE = 4  # llama.cpp's default pooling kernel for Gemma 3 (64 patches a side -> 16)


def mmproj_config(proj: GGUFFile, text_hidden: int) -> dict[str, Any]:
    """The vision fields of a Gemma 3 VLM's config (HF names) from the projector file's metadata."""
    meta = proj.metadata
    if get_str(meta, "general.architecture") != "clip":
        raise ModelLoadError(f"{proj.path} is not a multimodal projector file (general.architecture is not 'clip')")
    kind = get_str(meta, "clip.projector_type") or get_str(meta, "clip.vision.projector_type")
    if kind != "gemma3":
        raise UnsupportedArchitectureError(f"{proj.path}: projector type {kind!r} is not supported (supported: gemma3)")
    projection = get_int(meta, "clip.vision.projection_dim", text_hidden, low=1)
    if projection != text_hidden:
        raise ModelLoadError(f"{proj.path} projects to {projection} dimensions; the text model's are {text_hidden}")

    def need(key: str) -> int:
        value = get_int(meta, f"clip.vision.{key}", low=1)
        if value is None:
            raise ModelLoadError(f"{proj.path} lacks clip.vision.{key}")
        return value

    vision = {
        "image_size": need("image_size"), "patch_size": need("patch_size"), "hidden_size": need("embedding_length"),
        "intermediate_size": need("feed_forward_length"), "num_hidden_layers": need("block_count"),
        "num_attention_heads": need("attention.head_count"),
        "layer_norm_eps": get_float(meta, "clip.vision.attention.layer_norm_epsilon", 1e-6, positive=True),
    }  # fmt: skip
    scale = get_int(meta, "clip.vision.projector.scale_factor", DEFAULT_SCALE, low=1)
    side = vision["image_size"] // vision["patch_size"] // scale
    config = {"vision_config": vision, "mm_tokens_per_image": side * side}
    for key in ("image_mean", "image_std"):
        values = get_list(meta, f"clip.vision.{key}", "number", 3)
        if values is not None:
            config[key] = [float(v) for v in values]
    return config


def image_token_ids(text: GGUFFile) -> dict[str, int]:
    tokens = get_list(text.metadata, "tokenizer.ggml.tokens", "str") or []
    index = {t: i for i, t in enumerate(tokens) if t in IMAGE_TOKENS}
    missing = [t for t in IMAGE_TOKENS if t not in index]
    if missing:
        raise ModelLoadError(f"{text.path}: the vocabulary lacks the image tokens {missing} (not a Gemma 3 vocabulary)")
    boi, eoi, image = (index[t] for t in IMAGE_TOKENS)
    return {"boi_token_index": boi, "eoi_token_index": eoi, "image_token_index": image}


def mmproj_state(proj: GGUFFile, layers: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Our names -> tensors of the tower and the projector."""
    state, names = {}, set(proj.tensor_names)
    for name, ours in _GLOBAL.items():
        if name in names:
            tensor = proj.load_tensor(name, torch.float32)
            state[ours] = (tensor - 1 if name == "mm.soft_emb_norm.weight" else tensor).to(dtype)
    for i in range(layers):
        prefix, ours = f"v.blk.{i}.", f"vision_tower.encoder.layers.{i}."
        for attr in ("weight", "bias"):
            parts = [f"{prefix}{p}.{attr}" for p in _QKV]
            if all(p in names for p in parts):
                state[f"{ours}self_attn.qkv_proj.{attr}"] = torch.cat([proj.load_tensor(p, dtype) for p in parts])
            for short, long in _LAYER.items():
                if f"{prefix}{short}.{attr}" in names:
                    state[f"{ours}{long}.{attr}"] = proj.load_tensor(f"{prefix}{short}.{attr}", dtype)
        _unswap_mlp(state, ours)
    return state


def _unswap_mlp(state: dict[str, torch.Tensor], ours: str) -> None:
    up, down = state.get(f"{ours}mlp.fc1.weight"), state.get(f"{ours}mlp.fc2.weight")
    if up is not None and down is not None and up.shape[0] < down.shape[0]:  # fc1 widens: these are swapped
        for attr in ("weight", "bias"):
            a, b = f"{ours}mlp.fc1.{attr}", f"{ours}mlp.fc2.{attr}"
            if a in state and b in state:
                state[a], state[b] = state[b], state[a]


def open_mmproj(path: str | Path) -> GGUFFile:
    return GGUFFile(Path(path).expanduser())


def attach_mmproj(text_model: torch.nn.Module, text_source: Any, path: str | Path, dtype: torch.dtype):
    """The Gemma 3 VLM of a loaded Gemma 3 text model and a projector file."""
    from ..models.gemma3 import Gemma3ForCausalLM
    from ..models.gemma3_vlm import Gemma3ForConditionalGeneration

    if type(text_model) is not Gemma3ForCausalLM or not isinstance(text_source, GGUFFile):
        raise UnsupportedArchitectureError("--mmproj goes with a Gemma 3 text model in a GGUF file")
    proj = open_mmproj(path)
    cfg = text_model.config
    cfg.extra.update(mmproj_config(proj, cfg.hidden_size), **image_token_ids(text_source))
    with torch.device("meta"):
        vlm = Gemma3ForConditionalGeneration(cfg)
    expected = {k: tuple(v.shape) for k, v in vlm.state_dict().items() if not k.startswith("language_model.")}
    vlm.language_model, vlm.rotary = text_model, text_model.rotary
    state = mmproj_state(proj, cfg.extra["vision_config"]["num_hidden_layers"], dtype)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(f"{proj.path}: tensors missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name]:
            raise ModelLoadError(
                f"{proj.path}: {name} has shape {tuple(tensor.shape)}; the metadata makes {expected[name]}"
            )
    vlm.load_state_dict(state, strict=False, assign=True)
    return vlm.eval()
