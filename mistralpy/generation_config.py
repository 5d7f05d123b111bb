"""Server-wide sampling defaults: the model folder's generation_config.json ("auto"), none ("vllm", vLLM's name for
its own defaults), or a generation_config.json given by path (`--generation-config`). A request's fields override
them; a field it leaves unset takes them (as vLLM and the reference system apply them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import InvalidRequestError
from .loader.hf_folder import read_json_object, sampling_defaults


def generation_defaults(source: Any, setting: str) -> dict[str, Any]:
    if setting == "auto":
        return dict(getattr(source, "generation_defaults", {}))  # a GGUF file has none
    if setting == "vllm":
        return {}
    path = Path(setting).expanduser()
    file = path / "generation_config.json" if path.is_dir() else path
    if not file.is_file():
        raise InvalidRequestError(
            f"generation_config {setting!r}: expected 'auto', 'vllm', or a generation_config.json file or its folder"
        )
    return sampling_defaults(read_json_object(file))
