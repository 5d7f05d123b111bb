"""mistral.rs's LoRA selectors: a base (GGUF, GGML or a Hugging Face folder) with PEFT LoRA adapters active for every
request that names none. Requests pick others (or several) with `adapters=[names]` or `model=name`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError
from ..loader.hf_folder import read_json_object
from ..lora.ordering import AdapterSet, read_ordering
from .base import GGML, GGUF, ModelDType, ModelSpec, Plain, local_path


def tokenizer_of_ordering(base_model_id: str) -> str | None:
    """The ordering file's base_model_id where it is a local folder with tokenizer.json, as mistral.rs reads a
    tokenizer from it when tok_model_id is None (a hub id is not followed: the file's own tokenizer is used)."""
    return base_model_id if (Path(base_model_id).expanduser() / "tokenizer.json").is_file() else None


class _OrderedAdapters:
    """A quantized base whose adapters an ordering file names (LoraGGUF, LoraGGML): its tokenizer, where none is
    given, from the ordering's base_model_id."""

    adapters_model_id: str
    order: str
    tok_model_id: str | None

    def resolve(self) -> ModelSpec:
        ordering = read_ordering(self.order)
        if self.tok_model_id is None:
            self.tok_model_id = tokenizer_of_ordering(ordering.base_model_id)
        spec = super().resolve()
        return dataclasses.replace(spec, adapters=ordering.adapters(self.adapters_model_id))


class LoraGGUF(_OrderedAdapters, GGUF):
    """A GGUF base with the LoRA adapters of a mistral.rs ordering file (`order`): its `order` names folders of
    `adapters_model_id`, active for every request that names no adapter (lora/ordering.py). `tok_model_id` None: the
    ordering file's base_model_id where it is a local folder with tokenizer.json, else the GGUF's own tokenizer."""

    def __init__(
        self,
        quantized_model_id: str,
        quantized_filename: str | list[str],
        adapters_model_id: str,
        order: str,
        tok_model_id: str | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        super().__init__(quantized_model_id, quantized_filename, tok_model_id, dtype, **unsupported)
        self.adapters_model_id, self.order = adapters_model_id, order

    def __repr__(self) -> str:
        return f"Which.LoraGGUF({self.quantized_model_id!r}, {self.quantized_filename!r}, {self.order!r})"


class LoraGGML(_OrderedAdapters, GGML):
    """A legacy GGML base with the LoRA adapters of an ordering file, as Which.LoraGGUF. `gqa` is mistralpy's
    addition (mistral.rs's LoraGGML has none and assumes 1): the grouped-query factor the format does not record."""

    def __init__(
        self,
        quantized_model_id: str,
        quantized_filename: str,
        adapters_model_id: str,
        order: str,
        tok_model_id: str | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        gqa: int | None = None,
        **unsupported: Any,
    ) -> None:
        super().__init__(quantized_model_id, quantized_filename, tok_model_id, gqa, dtype, **unsupported)
        self.adapters_model_id, self.order = adapters_model_id, order

    def __repr__(self) -> str:
        return f"Which.LoraGGML({self.quantized_model_id!r}, {self.quantized_filename!r}, {self.order!r})"


class Lora(Plain):
    """A Hugging Face base folder with PEFT LoRA adapters, active for every request that names none
    (`adapter_model_id`: one folder or a list; each adapter is named after its folder). `model_id` None: the first
    adapter's base_model_name_or_path (adapter_config.json), which must then be a local folder."""

    def __init__(
        self,
        adapter_model_id: str | list[str],
        arch: Any = None,
        model_id: str | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        folders = [adapter_model_id] if isinstance(adapter_model_id, (str, Path)) else list(adapter_model_id)
        if not folders:
            raise InvalidRequestError("adapter_model_id must name at least one adapter folder")
        if model_id is None:
            model_id = read_json_object(local_path(folders[0], "adapter_model_id") / "adapter_config.json").get(
                "base_model_name_or_path"
            )
        super().__init__(model_id, arch, dtype, **unsupported)
        self.adapter_model_id = folders

    def __repr__(self) -> str:
        return f"Which.Lora(adapter_model_id={self.adapter_model_id!r}, model_id={self.model_id!r})"

    def resolve(self) -> ModelSpec:
        spec = super().resolve()
        return ModelSpec(spec.model, None, spec.dtype, adapters=AdapterSet.of_folders(self.adapter_model_id))
