"""Gemma 3's vision-language model (transformers' Gemma3ForConditionalGeneration): a SigLIP tower, the projector,
and the Gemma 3 text model, whose input embeddings take the projected image rows at the image-token positions.

The image tokens of one image attend to each other both ways (transformers' token_type_ids mask); the engine marks
their ranges on the prefill spans (PrefillSpan.bidirectional) and schedules each image in one chunk."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ModelLoadError
from ..layers.attention import AttentionMetadata
from ..multimodal.step_images import StepImages
from ..multimodal.vision_spec import VisionSpec
from .gemma3 import Gemma3ForCausalLM
from .gemma3_projector import Gemma3Projector
from .siglip import SiglipConfig, SiglipVisionTower

# HF checkpoints' prefixes (the Hub's, and transformers 5's own) -> ours
_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("language_model.model.", "language_model.model."),
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("multi_modal_projector.", "multi_modal_projector."),
)
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)  # Gemma 3's processor (IMAGENET_STANDARD_MEAN / _STD)


def vision_spec(cfg: ModelConfig) -> VisionSpec:
    extra = cfg.extra
    try:
        ids = [int(extra[k]) for k in ("image_token_index", "boi_token_index", "eoi_token_index")]
        tokens = int(extra["mm_tokens_per_image"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"gemma3 vision: missing or invalid image token field: {e}") from None
    if any(not 0 <= i < cfg.vocab_size for i in ids[1:]) or ids[0] < 0:
        raise ModelLoadError(f"gemma3 vision: image token ids {ids} out of the vocabulary ({cfg.vocab_size})")
    size = SiglipConfig.from_dict(extra.get("vision_config")).image_size
    mean, std = (tuple(extra.get(k) or d) for k, d in (("image_mean", IMAGE_MEAN), ("image_std", IMAGE_STD)))
    return VisionSpec(size, mean, std, ids[0], tokens, ids[1], ids[2])


class Gemma3ForConditionalGeneration(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        vision = SiglipConfig.from_dict(cfg.extra.get("vision_config"))
        self.vision = vision_spec(cfg)
        self.language_model = Gemma3ForCausalLM(cfg)
        self.rotary = self.language_model.rotary
        self.vision_tower = SiglipVisionTower(vision)
        tokens = self.vision.tokens_per_image
        self.multi_modal_projector = Gemma3Projector(
            vision.hidden_size, cfg.hidden_size, vision.layer_norm_eps, vision.patches_per_side, tokens
        )

    fused = Gemma3ForCausalLM.fused
    gguf_to_hf = Gemma3ForCausalLM.gguf_to_hf
    gguf_ignored = Gemma3ForCausalLM.gguf_ignored
    gguf_transform = staticmethod(Gemma3ForCausalLM.gguf_transform)

    @staticmethod
    def hf_rename(name: str, cfg: ModelConfig) -> str | None:
        """A checkpoint's tensor name as ours; None for what the model does not use (SigLIP's pooling head, a tied
        lm_head)."""
        if name == "lm_head.weight":
            return None if cfg.tie_word_embeddings else "language_model.lm_head.weight"
        for old, new in _PREFIXES:
            if name.startswith(old):
                name = new + name[len(old) :]
                return None if name.startswith("vision_tower.head.") else name
        return name

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) pixel values -> (B, tokens_per_image, hidden) embeddings in the text model's dtype."""
        dtype = self.multi_modal_projector.mm_input_projection_weight.dtype
        return self.multi_modal_projector(self.vision_tower(pixels.to(dtype)))

    def forward(
        self, input_ids, positions, kv_caches, meta: AttentionMetadata, images: StepImages | None = None
    ) -> torch.Tensor:
        if images is None:
            return self.language_model(input_ids, positions, kv_caches, meta)
        model = self.language_model.model
        x = images.scatter(model.embed(input_ids.clamp(max=self.config.vocab_size - 1)))
        for layer, kv_cache in zip(model.layers, kv_caches, strict=True):
            x = layer(x, positions, kv_cache, meta)
        return model.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.language_model.compute_logits(hidden)
