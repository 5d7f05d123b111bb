"""Which: mistral.rs's model selectors for the Runner, on local paths (there is no Hugging Face hub download).

Bases: `Which.GGUF`, `Which.GGML`, `Which.Plain` (base.py); with LoRA adapters and an ordering file `Which.LoraGGUF`,
`Which.LoraGGML`, or `Which.Lora` (lora.py); with an X-LoRA model `Which.XLora`, `Which.XLoraGGUF`, `Which.XLoraGGML`
(xlora.py). They take mistral.rs's parameter names; one mistralpy does not implement raises InvalidRequestError
unless it has its "off" value; a name mistral.rs does not have either is a TypeError."""

from __future__ import annotations

from .base import GGML, GGUF, ModelDType, ModelSpec, Plain, reject_unsupported, resolve_dtype_name
from .lora import Lora, LoraGGML, LoraGGUF
from .xlora import XLora, XLoraGGML, XLoraGGUF


class Which:
    """mistral.rs's model selector: `Which.GGUF(...)`, `Which.GGML(...)`, `Which.Plain(...)`; with LoRA adapters
    `Which.LoraGGUF(...)`, `Which.LoraGGML(...)` (an ordering file) or `Which.Lora(...)`; with an X-LoRA model
    `Which.XLora(...)`, `Which.XLoraGGUF(...)`, `Which.XLoraGGML(...)`."""

    GGUF = GGUF
    GGML = GGML
    Plain = Plain
    LoraGGUF = LoraGGUF
    LoraGGML = LoraGGML
    Lora = Lora
    XLora = XLora
    XLoraGGUF = XLoraGGUF
    XLoraGGML = XLoraGGML


__all__ = [
    "GGML", "GGUF", "Lora", "LoraGGML", "LoraGGUF", "ModelDType", "ModelSpec", "Plain", "Which", "XLora", "XLoraGGML",
    "XLoraGGUF", "reject_unsupported", "resolve_dtype_name",
]  # fmt: skip
