"""X-LoRA (PEFT's XLoraModel): a classifier over the base model's hidden states mixes LoRA adapters per token.
Imported by the CLI: the modules that need torch are imported where they are used."""

from .config import XLoraConfig

__all__ = ["XLoraConfig"]
