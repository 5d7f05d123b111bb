"""SigLIP's vision encoder (the tower of Gemma 3, PaliGemma, and other vision-language models): a patch convolution
plus learned absolute positions, pre-LN transformer layers with bidirectional attention over all patches, GELU (tanh)
MLPs, a final LayerNorm. The pooling head is not part of it: the language models read the last hidden states.

q/k/v are stored fused (`qkv_proj`), as in the decoders, so that the loader's fusing table applies to both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError, UnsupportedArchitectureError

# transformers' SiglipVisionConfig defaults, for configs that spell only what differs (the Hub's Gemma 3 configs)
_DEFAULTS = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, num_channels=3,
    image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
)  # fmt: skip
_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new")


@dataclass(frozen=True)
class SiglipConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_channels: int
    image_size: int
    patch_size: int
    layer_norm_eps: float
    hidden_act: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SiglipConfig:
        if not isinstance(raw, dict):
            raise ModelLoadError(f"vision_config must be an object, not {type(raw).__name__}")
        values = {key: raw.get(key, default) for key, default in _DEFAULTS.items()}
        try:
            cfg = cls(**{k: v if k == "hidden_act" else type(_DEFAULTS[k])(v) for k, v in values.items()})
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"invalid vision_config: {e}") from None
        cfg.check()
        return cfg

    def check(self) -> None:
        sizes = (self.hidden_size, self.intermediate_size, self.num_attention_heads, self.image_size, self.patch_size)
        if min(sizes) < 1 or self.num_hidden_layers < 0 or self.num_channels < 1:
            raise ModelLoadError(f"vision_config: sizes must be positive: {self}")
        if self.hidden_size % self.num_attention_heads or self.image_size % self.patch_size:
            raise ModelLoadError("vision_config: hidden_size must split into heads and image_size into patches")
        if self.hidden_act not in _TANH_GELU:
            raise UnsupportedArchitectureError(f"vision_config: unsupported hidden_act {self.hidden_act!r}")

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size


class PositionTable(nn.Module):
    """The learned position of each patch (an embedding table read whole: every image has all patches)."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim), requires_grad=False)


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = PositionTable(cfg.patches_per_side**2, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, patches, hidden)."""
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        return x + self.position_embedding.weight


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.num_heads, self.hidden = cfg.num_attention_heads, cfg.hidden_size
        self.qkv_proj = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, self.num_heads, -1).transpose(1, 2) for t in self.qkv_proj(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # every patch sees every patch
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.hidden))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class SiglipVisionTower(nn.Module):
    """pixel values (B, C, image_size, image_size) -> last hidden states (B, patches, hidden)."""

    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)
