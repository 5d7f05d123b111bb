"""The base model selectors of mistral.rs's `Which` for the Runner, on local paths (no Hugging Face hub download).

`Which.GGUF(quantized_model_id, quantized_filename, tok_model_id=None, dtype=...)` and `Which.Plain(model_id,
arch=None, dtype=...)` take mistral.rs's parameter names. A mistral.rs parameter mistralpy does not implement raises
InvalidRequestError unless it has its "off" value; a name mistral.rs does not have either is a TypeError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelNotFoundError
from ..loader.hf_folder import read_json_object
from ..lora.ordering import AdapterSet


class ModelDType(str, enum.Enum):
    """mistral.rs's dtype names; plain strings work too ("auto", "bf16", "float32", ...)."""

    Auto = "auto"
    BF16 = "bf16"
    F16 = "f16"
    F32 = "f32"


_DTYPE_NAMES = {"auto": "auto", "bf16": "bfloat16", "f16": "float16", "f32": "float32"}


@dataclass(frozen=True)
class ModelSpec:
    """What a Which resolves to: the path the engine loads, where a separate tokenizer lives, the compute dtype."""

    model: str
    tokenizer: str | None
    dtype: str
    gqa: int | None = None  # legacy GGML only: the grouped-query factor the format does not record
    adapters: AdapterSet | None = None  # Which.Lora*: LoRA adapters by name and those active by default
    xlora: str | None = None  # Which.XLora*: the X-LoRA model's folder (PEFT's layout)
    xlora_non_granular: int | None = None  # Which.XLora*'s tgt_non_granular_index
    xlora_layers: dict[str, int] | None = None  # Which.XLora*: the ordering file's layers, checked at load


def reject_unsupported(owner: str, given: dict[str, Any], known: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    """`known`: mistral.rs's parameter -> (its values that ask for nothing, why mistralpy cannot do more)."""
    for name, value in given.items():
        if name not in known:
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}")
        allowed, reason = known[name]
        if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise InvalidRequestError(f"{owner}({name}={value!r}) is not supported: {reason}")


def resolve_dtype_name(dtype: ModelDType | str) -> str:
    name = dtype.value if isinstance(dtype, ModelDType) else dtype
    if not isinstance(name, str):
        raise InvalidRequestError(f"dtype must be a ModelDType or a string, got {dtype!r}")
    return _DTYPE_NAMES.get(name.lower(), name)  # anything else is checked by EngineConfig


def local_path(value: Any, what: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise InvalidRequestError(f"{what} must be a local path, got {value!r}")
    path = Path(value).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"{what} not found: {path} (mistralpy loads local paths only, not Hugging Face ids)")
    return path


_NONE = (None,)
_NOT_HERE = "not implemented in mistralpy"
_COMMON = {
    "topology": (_NONE, "device mapping " + _NOT_HERE),
    "auto_map_params": (_NONE, "device mapping " + _NOT_HERE),
    "tokenizer_json": (
        _NONE,
        "pass tok_model_id=<folder holding tokenizer.json> (GGUF) or keep it in the model folder",
    ),
    "organization": (_NONE, "ISQ organization " + _NOT_HERE + "; use Runner(in_situ_quant=...)"),
    "write_uqff": (_NONE, "UQFF files are " + _NOT_HERE),
    "imatrix": (_NONE, "imatrix-guided quantization is " + _NOT_HERE),
    "calibration_file": (_NONE, "imatrix-guided quantization is " + _NOT_HERE),
    "hf_cache_path": (_NONE, "mistralpy loads local paths only"),
    "matformer_config_path": (_NONE, "MatFormer slicing is " + _NOT_HERE),
    "matformer_slice_name": (_NONE, "MatFormer slicing is " + _NOT_HERE),
}
_GGUF_ONLY = {
    "mmproj_filename": (_NONE, "multimodal models are " + _NOT_HERE),
    "max_edge": (_NONE, "multimodal models are " + _NOT_HERE),
    "multimodal_auto_map_params": (_NONE, "multimodal models are " + _NOT_HERE),
    "adapters": (_NONE, "LoRA adapters are " + _NOT_HERE),
    "max_adapters": ((16,), "LoRA adapters are " + _NOT_HERE),
    "max_rank": ((256,), "LoRA adapters are " + _NOT_HERE),
    "max_bytes": ((8589934592,), "LoRA adapters are " + _NOT_HERE),
}
_PLAIN_ONLY = {"from_uqff": (_NONE, "UQFF files are " + _NOT_HERE)}


class GGUF:
    """A GGUF file: `quantized_model_id` is a folder and `quantized_filename` a file in it, or `quantized_model_id`
    is the file itself (then `quantized_filename` must be its name). `tok_model_id`: a folder with tokenizer.json
    (and tokenizer_config.json) to use instead of the tokenizer in the GGUF metadata."""

    def __init__(
        self,
        quantized_model_id: str,
        quantized_filename: str | list[str],
        tok_model_id: str | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        reject_unsupported(f"Which.{type(self).__name__}", unsupported, {**_COMMON, **_GGUF_ONLY})
        self.quantized_model_id, self.quantized_filename = quantized_model_id, quantized_filename
        self.tok_model_id, self.dtype = tok_model_id, dtype

    def __repr__(self) -> str:
        return (
            f"Which.GGUF(quantized_model_id={self.quantized_model_id!r}, "
            f"quantized_filename={self.quantized_filename!r}, tok_model_id={self.tok_model_id!r}, dtype={self.dtype!r})"
        )

    def resolve(self) -> ModelSpec:
        filename = self.quantized_filename
        if isinstance(filename, list):
            if len(filename) != 1:
                raise InvalidRequestError(f"quantized_filename: sharded GGUF files are not supported, got {filename}")
            filename = filename[0]
        if not isinstance(filename, str) or not filename:
            raise InvalidRequestError(f"quantized_filename must be a file name, got {filename!r}")
        base = local_path(self.quantized_model_id, "quantized_model_id")
        if base.is_dir():
            path = base / filename
            if not path.is_file():
                raise ModelNotFoundError(f"quantized_filename {filename!r} not found in {base}")
        elif Path(filename).name != base.name:
            raise InvalidRequestError(
                f"quantized_model_id is the file {base}, but quantized_filename names {filename!r}"
            )
        else:
            path = base
        tokenizer = None
        if self.tok_model_id is not None:
            folder = local_path(self.tok_model_id, "tok_model_id")
            if not (folder / "tokenizer.json").is_file():
                raise ModelNotFoundError(f"tok_model_id: no tokenizer.json in {folder}")
            tokenizer = str(folder)
        return ModelSpec(str(path), tokenizer, resolve_dtype_name(self.dtype))


class GGML(GGUF):
    """A legacy GGML (ggjt v3) file, located like Which.GGUF; `gqa` is the grouped-query factor (heads per key/value
    head) that the format does not record, as mistral.rs's Which.GGML takes it."""

    def __init__(
        self,
        quantized_model_id: str,
        quantized_filename: str | list[str],
        tok_model_id: str | None = None,
        gqa: int | None = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        super().__init__(quantized_model_id, quantized_filename, tok_model_id, dtype, **unsupported)
        self.gqa = gqa

    def __repr__(self) -> str:
        return super().__repr__().replace("Which.GGUF(", "Which.GGML(", 1)[:-1] + f", gqa={self.gqa!r})"

    def resolve(self) -> ModelSpec:
        spec = super().resolve()
        return ModelSpec(spec.model, spec.tokenizer, spec.dtype, self.gqa)


class Plain:
    """A Hugging Face model folder (config.json, *.safetensors, tokenizer.json). `arch` (a mistral.rs
    architecture name such as "llama" or "mistral") is optional; when given it must match config.json."""

    def __init__(
        self,
        model_id: str,
        arch: Any = None,
        dtype: ModelDType | str = ModelDType.Auto,
        **unsupported: Any,
    ) -> None:
        reject_unsupported(f"Which.{type(self).__name__}", unsupported, {**_COMMON, **_PLAIN_ONLY})
        self.model_id, self.arch, self.dtype = model_id, arch, dtype

    def __repr__(self) -> str:
        return f"Which.Plain(model_id={self.model_id!r}, arch={self.arch!r}, dtype={self.dtype!r})"

    def resolve(self) -> ModelSpec:
        folder = local_path(self.model_id, "model_id")
        if not (folder / "config.json").is_file():
            hint = "; use Which.GGUF for a GGUF file" if folder.suffix.lower() == ".gguf" else ""
            raise InvalidRequestError(f"model_id must be a Hugging Face model folder with config.json: {folder}{hint}")
        if self.arch is not None:
            self._check_arch(folder)
        return ModelSpec(str(folder), None, resolve_dtype_name(self.dtype))

    def _check_arch(self, folder: Path) -> None:
        arch = getattr(self.arch, "value", self.arch)
        if not isinstance(arch, str):
            raise InvalidRequestError(f"arch must be an architecture name such as 'llama', got {self.arch!r}")
        names = read_json_object(folder / "config.json").get("architectures") or []
        found = [str(n) for n in names]
        wanted = _ARCH_ALIASES.get(arch.lower(), arch.lower())
        if not any(n.lower().removesuffix("forcausallm") == wanted for n in found):
            raise InvalidRequestError(f"arch {arch!r} does not match the model in {folder} (config.json: {found})")


# mistral.rs architecture names that differ from the HF class name's stem
_ARCH_ALIASES = {"phi2": "phi"}
