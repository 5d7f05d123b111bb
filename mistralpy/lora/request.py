"""LoRARequest: which adapter a request runs with, in vLLM's shape (`vllm.lora.request.LoRARequest`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidRequestError


@dataclass(frozen=True)
class LoRARequest:
    """`lora_name`: the adapter's name (the server's `model` field); `lora_int_id`: a positive id, unique per adapter
    (as vLLM: requests with the same id share the loaded adapter); `lora_path`: the PEFT folder
    (adapter_config.json + adapter_model.safetensors)."""

    lora_name: str
    lora_int_id: int
    lora_path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise InvalidRequestError(f"lora_name must be a non-empty string, got {self.lora_name!r}")
        if not isinstance(self.lora_int_id, int) or isinstance(self.lora_int_id, bool) or self.lora_int_id < 1:
            raise InvalidRequestError(f"lora_int_id must be a positive integer, got {self.lora_int_id!r}")
        if not isinstance(self.lora_path, str) or not self.lora_path:
            raise InvalidRequestError(f"lora_path must name the adapter's folder, got {self.lora_path!r}")

    @property
    def adapter_id(self) -> int:
        return self.lora_int_id

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def path(self) -> str:
        return self.lora_path
