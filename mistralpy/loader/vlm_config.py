"""A vision-language model's config.json as one flat config: its text_config's fields (with the family's defaults
where the Hub's configs leave them out) plus the vision fields, so that ModelConfig reads it like a text model's."""

from __future__ import annotations

from typing import Any

from ..errors import ModelLoadError

# transformers' Gemma3TextConfig / Gemma3Config defaults: the Hub's Gemma 3 configs spell only what differs
_GEMMA3_TEXT = dict(
    vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, max_position_embeddings=131_072, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0, sliding_window=4096, query_pre_attn_scalar=256,
    hidden_activation="gelu_pytorch_tanh", bos_token_id=2, eos_token_id=1,
)  # fmt: skip
_GEMMA3_VISION = dict(mm_tokens_per_image=256, boi_token_index=255_999, eoi_token_index=256_000)
_ID_ALIASES = {
    "image_token_id": "image_token_index",
    "boi_token_id": "boi_token_index",
    "eoi_token_id": "eoi_token_index",
}
VLM_TEXT_DEFAULTS = {"Gemma3ForConditionalGeneration": (_GEMMA3_TEXT, {**_GEMMA3_VISION, "image_token_index": 262_144})}


def flatten_vlm_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.json of a known vision-language architecture, flattened; any other config unchanged."""
    architectures = config.get("architectures") or []
    defaults = VLM_TEXT_DEFAULTS.get(architectures[0]) if isinstance(architectures, list) and architectures else None
    if defaults is None:
        return config
    text_defaults, vision_defaults = defaults
    text = config.get("text_config") or {}
    if not isinstance(text, dict) or not isinstance(config.get("vision_config", {}), dict):
        raise ModelLoadError("config.json: text_config and vision_config must be objects")
    top = {_ID_ALIASES.get(k, k): v for k, v in config.items() if k != "text_config"}
    flat = {**text_defaults, **text, **vision_defaults, **top}
    flat.setdefault("vision_config", {})
    return flat
