"""AnyMoE (mistral.rs's): a dense model's MLPs turned into mixtures of experts (the base MLP, fine-tuned MLPs or LoRA
adapters), routed by per-layer linear gates trained at load on (prompt, expert) examples."""

from .config import AnyMoeConfig

__all__ = ["AnyMoeConfig"]
