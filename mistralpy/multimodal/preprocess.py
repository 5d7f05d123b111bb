"""Pixels for a vision tower: an image converted to RGB, resized to the tower's square size (Pillow's bilinear filter,
as transformers' Gemma 3 image processor), scaled to [0, 1] and normalised by the model's mean and std."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .vision_spec import VisionSpec


def pixel_values(image, spec: VisionSpec) -> torch.Tensor:
    """A PIL image -> (3, size, size) float32."""
    from PIL import Image

    rgb = image.convert("RGB") if image.mode != "RGB" else image
    resized = rgb.resize((spec.image_size, spec.image_size), resample=Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0  # rounded to float32 first, as the processor's rescale
    mean, std = np.asarray(spec.image_mean, np.float32), np.asarray(spec.image_std, np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


def image_hash(pixels: torch.Tensor) -> bytes:
    """The digest of what the model sees: equal pixels, equal embeddings (whatever file they came from)."""
    h = hashlib.sha256(repr((tuple(pixels.shape), str(pixels.dtype))).encode())
    h.update(pixels.contiguous().numpy().tobytes())
    return h.digest()
