"""X-LoRA (PEFT's XLoraModel): a classifier over the base model's hidden states mixes LoRA adapters per token."""

from .checkpoint import XLoraCheckpoint, read_xlora
from .config import XLoraConfig

__all__ = ["XLoraCheckpoint", "XLoraConfig", "read_xlora"]
