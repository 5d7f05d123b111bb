"""Loading a finished build, and saying which of its kernels this CPU does without.

The library is imported directly (torch's extension loader would first import its build machinery, ~0.15 s and
~4.5 MiB, for nothing), after checking that the key it was built for is this process's key: the directory name
already says so, the check guards against a directory copied or renamed by hand.
"""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

from .build_dir import BuildDir
from .build_key import BuildKey


class ForeignBuildError(ImportError):
    """The library in the directory was built for another key (another CPU, compiler, torch or source)."""


def load_library(where: BuildDir, key: BuildKey) -> ModuleType:
    try:
        recorded = json.loads(where.key_file.read_text())
    except (OSError, ValueError) as e:
        raise ForeignBuildError(f"{where.key_file} is missing or unreadable ({e})") from e
    ours = json.loads(key.to_json())
    if recorded != ours:
        differ = sorted(k for k in ours.keys() | recorded.keys() if ours.get(k) != recorded.get(k))
        raise ForeignBuildError(f"{where.library} was built for another key (differs in: {', '.join(differ)})")
    import torch  # noqa: F401  (the library links against torch's, which must be loaded first)

    spec = importlib.util.spec_from_file_location(where.name, where.library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.isa_level() != key.isa:  # the key's level names the macros it was compiled with: a mismatch is a bug
        raise ForeignBuildError(f"{where.library} was compiled for the {module.isa_level()} level, not {key.isa}")
    return module


# what the torch paths do instead of a kernel that a build may lack, by the probe that says whether it has it
_FALLBACKS = {
    "has_qmatmul": "no quantized matmul (torch's int4 kernel or dense weights run instead)",
}


def missing_kernels(module: ModuleType) -> list[str]:
    """The kernels this build lacks (not compiled for this CPU), each with what runs instead."""
    return [fallback for probe, fallback in _FALLBACKS.items() if not getattr(module, probe)()]
