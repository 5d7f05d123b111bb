"""mistral.rs's X-LoRA selectors: a base (a Hugging Face folder, GGUF or GGML) with an X-LoRA model in PEFT's layout
(`xlora_model_id`) and mistral.rs's ordering file (`order`), run for every request that names no other model.

The ordering's `order` must list the X-LoRA model's adapters in its own order (the classifier's classes), or be
absent; its `layers` (mistral.rs's scalings index per module), when given, must be PEFT's numbering of the modules the
adapters target (what mistral.rs's ordering script writes), checked once the model is loaded.
`tgt_non_granular_index` N: after N completion tokens a request's scalings stay fixed (lora/xlora/non_granular.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import InvalidRequestError
from ..loader.hf_folder import read_json_object
from ..lora.ordering import read_ordering
from ..lora.xlora.config import parse_xlora_config
from .base import GGML, GGUF, ModelDType, ModelSpec, Plain, local_path
from .lora import tokenizer_of_ordering


def _xlora_spec(spec: ModelSpec, xlora_model_id: Any, order: Any, non_granular: Any) -> ModelSpec:
    folder = local_path(xlora_model_id, "xlora_model_id")
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise InvalidRequestError(f"xlora_model_id {folder} is not an X-LoRA model: it has no adapter_config.json")
    adapters = list(parse_xlora_config(read_json_object(config_path), config_path).adapters)
    ordering = read_ordering(order)
    if ordering.order is not None and list(ordering.order) != adapters:
        raise InvalidRequestError(
            f"ordering file {order}: order {list(ordering.order)} is not the X-LoRA model's adapters in its order "
            f"{adapters}"
        )
    if ordering.preload:
        raise InvalidRequestError(f"ordering file {order}: preload_adapters are for LoRA models, not X-LoRA")
    if non_granular is not None and (isinstance(non_granular, bool) or not isinstance(non_granular, int)):
        raise InvalidRequestError(f"tgt_non_granular_index must be an integer >= 1 or None, got {non_granular!r}")
    if non_granular is not None and non_granular < 1:
        raise InvalidRequestError(f"tgt_non_granular_index must be an integer >= 1 or None, got {non_granular!r}")
    return dataclasses.replace(spec, xlora=str(folder), xlora_non_granular=non_granular, xlora_layers=ordering.layers)


def check_layers(numbers: dict[str, int], layers: dict[str, int] | None, order: str) -> None:
    """The ordering file's `layers` (mistral.rs's scalings index of each module) against PEFT's numbering of the
    loaded X-LoRA model's LoRA layers (`numbers`), which mistral.rs's create_ordering.py writes: they must agree."""
    if layers is None:
        return
    for name in sorted(set(numbers) | set(layers)):
        if layers.get(name) != numbers.get(name):
            raise InvalidRequestError(
                f"ordering file {order}: layers gives {name!r} the index {layers.get(name)}, but the X-LoRA model's "
                f"LoRA layer {name!r} is number {numbers.get(name)} (PEFT's numbering of the modules it targets)"
            )


class XLora(Plain):
    """A Hugging Face base folder with an X-LoRA model. `model_id` None: the ordering file's base_model_id, which
    must then be a local folder."""

    def __init__(
        self,
        xlora_model_id: str,
        order: str,
        arch: Any = None,
        model_id: str | None = None,
        tgt_non_granular_index: int | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        if model_id is None:
            model_id = read_ordering(order).base_model_id
        super().__init__(model_id, arch, dtype, **unsupported)
        self.xlora_model_id, self.order, self.tgt_non_granular_index = xlora_model_id, order, tgt_non_granular_index

    def __repr__(self) -> str:
        return f"Which.XLora(xlora_model_id={self.xlora_model_id!r}, order={self.order!r}, model_id={self.model_id!r})"

    def resolve(self) -> ModelSpec:
        return _xlora_spec(super().resolve(), self.xlora_model_id, self.order, self.tgt_non_granular_index)


class XLoraGGUF(GGUF):
    """A GGUF base with an X-LoRA model; `tok_model_id` None: the ordering file's base_model_id where it is a local
    folder with tokenizer.json, else the GGUF's own tokenizer."""

    def __init__(
        self,
        quantized_model_id: str,
        quantized_filename: str | list[str],
        xlora_model_id: str,
        order: str,
        tok_model_id: str | None = None,
        tgt_non_granular_index: int | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        super().__init__(quantized_model_id, quantized_filename, tok_model_id, dtype, **unsupported)
        self.xlora_model_id, self.order, self.tgt_non_granular_index = xlora_model_id, order, tgt_non_granular_index

    def __repr__(self) -> str:
        return f"Which.XLoraGGUF({self.quantized_model_id!r}, {self.quantized_filename!r}, {self.xlora_model_id!r})"

    def resolve(self) -> ModelSpec:
        if self.tok_model_id is None:
            self.tok_model_id = tokenizer_of_ordering(read_ordering(self.order).base_model_id)
        return _xlora_spec(super().resolve(), self.xlora_model_id, self.order, self.tgt_non_granular_index)


class XLoraGGML(GGML):
    """A legacy GGML base with an X-LoRA model, as Which.XLoraGGUF; `gqa` as Which.GGML."""

    def __init__(
        self,
        quantized_model_id: str,
        quantized_filename: str,
        xlora_model_id: str,
        order: str,
        tok_model_id: str | None = None,
        tgt_non_granular_index: int | None = None,
        gqa: int | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        super().__init__(quantized_model_id, quantized_filename, tok_model_id, gqa, dtype, **unsupported)
        self.xlora_model_id, self.order, self.tgt_non_granular_index = xlora_model_id, order, tgt_non_granular_index

    def __repr__(self) -> str:
        return f"Which.XLoraGGML({self.quantized_model_id!r}, {self.quantized_filename!r}, {self.xlora_model_id!r})"

    def resolve(self) -> ModelSpec:
        if self.tok_model_id is None:
            self.tok_model_id = tokenizer_of_ordering(read_ordering(self.order).base_model_id)
        return _xlora_spec(super().resolve(), self.xlora_model_id, self.order, self.tgt_non_granular_index)
