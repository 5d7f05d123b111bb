"""Model sources: a GGUF file, a legacy GGML file or a Hugging Face folder, read as a ModelConfig plus named tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from ..config import ModelConfig
from ..errors import InvalidRequestError, ModelLoadError, ModelNotFoundError
from .ggml import GGMLFile, GGMLParams, has_ggml_magic
from .gguf import GGUFFile, has_gguf_magic
from .hf_folder import HFFolder

__all__ = ["GGMLFile", "GGMLParams", "GGUFFile", "HFFolder", "ModelSource", "open_model_source"]


class ModelSource(Protocol):
    """What a model needs from where its weights live."""

    @property
    def architecture(self) -> str: ...

    @property
    def tensor_names(self) -> list[str]: ...

    def model_config(self) -> ModelConfig: ...

    def load_tensor(self, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor: ...


def _open_folder(folder: Path) -> GGUFFile | HFFolder:
    if (folder / "config.json").is_file():
        return HFFolder(folder)
    ggufs = sorted(p for p in folder.glob("*.gguf") if p.is_file())
    if len(ggufs) == 1:
        return GGUFFile(ggufs[0])
    if ggufs:
        names = ", ".join(p.name for p in ggufs)
        raise ModelLoadError(f"several GGUF files in {folder} ({names}): pass the one to load")
    raise ModelLoadError(f"no model in {folder}: expected a config.json with *.safetensors, or one .gguf file")


def open_model_source(path: str | Path, ggml: GGMLParams | None = None) -> GGUFFile | HFFolder:
    """Open a .gguf file (or any file with GGUF magic), a legacy GGML file (ggjt v3; .ggml, or .bin with its magic),
    or a folder holding a HF model or exactly one .gguf file. `ggml`: the hyper-parameters a GGML file lacks; its
    GGML-only ones (gqa, rope_theta, rms_norm_eps) are an error for other formats, which record their own."""
    path = Path(path).expanduser()
    source = _open(path, ggml or GGMLParams())
    given = [] if ggml is None or isinstance(source, GGMLFile) else ggml.given()
    if given:
        raise InvalidRequestError(
            f"{', '.join(given)} only apply to legacy GGML files; {path} records its own hyper-parameters"
        )
    return source


def _open(path: Path, ggml: GGMLParams) -> GGUFFile | HFFolder:
    if not path.exists():
        raise ModelNotFoundError(f"model path not found: {path}")
    if path.is_dir():
        return _open_folder(path)
    if path.suffix.lower() == ".gguf" or has_gguf_magic(path):
        return GGUFFile(path)
    if path.suffix.lower() == ".ggml" or has_ggml_magic(path):
        return GGMLFile(path, ggml)
    raise ModelLoadError(
        f"unsupported model file: {path} (expected a GGUF file, a legacy GGML ggjt v3 file or a Hugging Face model "
        "folder)"
    )
