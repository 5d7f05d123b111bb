"""GGUFFile: a GGUF model file as metadata, a ModelConfig and named tensors, read through a memory map."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..config import ModelConfig
from ..errors import MistralpyError, ModelLoadError, ModelNotFoundError
from ..quant.ggml_types import GGML_QUANT_SIZES, GGMLQuantizationType
from ..quant.gguf_dequant import dequantize
from .gguf_config import gguf_model_config
from .gguf_header import GGUFFormatError, GGUFHeader, TensorEntry, parse_header

GGUF_MAGIC_BYTES = b"GGUF"

# Types whose stored bytes already are a torch dtype: returned as views when that dtype is asked for.
_NATIVE_DTYPES = {
    GGMLQuantizationType.F32: torch.float32,
    GGMLQuantizationType.F16: torch.float16,
    GGMLQuantizationType.BF16: torch.bfloat16,
}
# Smaller ones are copied instead: read in place, each would keep the file's pages around it resident (the kernel maps
# up to 64 KiB around a page it faults in). The embedded model's 61 float32 norm weights, 137 KiB, held 3.9 MiB of
# its file while serving in float32.
SMALL_TENSOR_BYTES = 1 << 20


class TensorInfo(NamedTuple):
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # torch order: (out_features, in_features) for a linear weight


def has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC_BYTES
    except OSError:
        return False


def _open_map(path: Path) -> mmap.mmap:
    with open(path, "rb") as f:
        # copy-on-write: tensors handed out are writable views, and writes never reach the file
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


class GGUFFile:
    """A GGUF file. Tensors are views on a copy-on-write memory map: nothing is read until it is used."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ModelNotFoundError(f"model file not found: {self.path}")
        if self.path.is_dir():
            raise ModelLoadError(f"not a GGUF file (a directory): {self.path}")
        if not has_gguf_magic(self.path):
            raise ModelLoadError(f"not a GGUF file: {self.path}")
        try:
            self._map = _open_map(self.path)
            header: GGUFHeader = parse_header(self._map)
        except (GGUFFormatError, OSError, ValueError) as e:
            raise ModelLoadError(f"truncated or corrupt GGUF file: {self.path} ({e})") from None
        self.version = header.version
        self.metadata: dict[str, Any] = header.metadata
        self._tensors: dict[str, TensorEntry] = header.tensors
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, architecture={self.metadata.get('general.architecture')!r})"

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ModelLoadError(f"GGUF file has no general.architecture: {self.path}")
        return arch

    def release_pages(self) -> None:
        """Drop the file's pages from memory. Tensors still viewing the map stay valid: the kernel reads their
        pages back from the file on the next touch (nothing writes to the map, so no private page is lost)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor_info(self, name: str) -> TensorInfo:
        entry = self._entry(name)
        return TensorInfo(entry.qtype, entry.shape)

    def raw_tensor(self, name: str) -> tuple[torch.Tensor, GGMLQuantizationType, tuple[int, ...]]:
        """The stored blocks as uint8 of shape (*shape[:-1], bytes_per_row), its type, and its torch shape."""
        entry = self._entry(name)
        raw = self._bytes[entry.offset : entry.offset + entry.n_bytes]
        if not entry.shape:
            return raw, entry.qtype, entry.shape
        block_size, type_size = GGML_QUANT_SIZES[entry.qtype]  # rows of whole blocks (the header checked)
        return raw.reshape(*entry.shape[:-1], entry.shape[-1] // block_size * type_size), entry.qtype, entry.shape

    def load_tensor(self, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """The tensor dequantized, in torch order; `dtype=None` keeps float32 (or the stored float dtype)."""
        raw, qtype, shape = self.raw_tensor(name)
        native = _NATIVE_DTYPES.get(qtype)
        if native is not None and dtype in (None, native) and raw.storage_offset() % 8 == 0:
            tensor = raw.reshape(-1).view(native).reshape(shape)
            return tensor.clone() if raw.numel() < SMALL_TENSOR_BYTES else tensor
        try:
            tensor = dequantize(raw, qtype, shape)
        except MistralpyError as e:
            raise ModelLoadError(f"cannot load tensor {name!r} from {self.path}: {e}") from None
        return tensor if dtype is None else tensor.to(dtype)

    def model_config(self) -> ModelConfig:
        return gguf_model_config(self)

    def _entry(self, name: str) -> TensorEntry:
        entry = self._tensors.get(name)
        if entry is None:
            raise ModelLoadError(f"tensor {name!r} not found in {self.path}")
        return entry
