"""LoRA adapters (PEFT's format) beside dense or quantized base weights, many adapters in one batch."""

from .request import LoRARequest

__all__ = ["LoRARequest"]
