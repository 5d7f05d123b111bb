"""Native CPU kernels: C++ sources here, compiled with torch's extension loader (needs g++ and ninja).

Kernels: decode and prefill attention over the paged KV cache, matmuls against group-quantized weight codes, fused bf16
RMSNorm / SiLU-and-mul / rotary, and the Llama decoder layers of a decode step composed from them (DecoderStack).
Compiling takes ~80 s once per machine; torch caches the build. An engine uses the kernels only if their build is
there when the engine starts (the layers then find them loaded); otherwise it starts the build in a detached process,
for the engines that come after, and runs the torch paths.
MISTRALPY_NATIVE=0 turns the kernels off.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

_NAME = "mistralpy_native_v35"  # bump when the sources change, so that stale builds are not picked up
_FILES = (
    "bindings.cpp",
    "decoder_stack.cpp",
    "elementwise.cpp",
    "kv_cache.cpp",
    "paged_attention.cpp",
    "prefill_attention.cpp",
    "quant_matmul.cpp",
)
_SOURCES = [str(Path(__file__).with_name(f)) for f in _FILES]
# OpenMP: at::parallel_for runs its loop on torch's threads (without it, serially), and `omp simd` vectorises the dots
_FLAGS = ["-O3", "-march=native", "-fopenmp"]
_state: dict[str, ModuleType | str | None] = {"module": None, "failed": None, "spawned": None}


def enabled() -> bool:
    return os.environ.get("MISTRALPY_NATIVE", "1") != "0"


def _build_dir() -> Path:
    """Where torch's extension loader builds these kernels, by its rule (importing the loader costs ~4.5 MiB and
    ~0.15 s, which a process that only loads the finished build need not pay)."""
    import torch

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root) / _NAME
    from torch._appdirs import user_cache_dir

    device = "cpu" if torch.version.cuda is None else "cu" + torch.version.cuda.replace(".", "")
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(os.path.realpath(user_cache_dir(appname="torch_extensions"))) / f"{python}_{device}" / _NAME


def _library() -> Path:
    return _build_dir() / f"{_NAME}.so"


def is_built() -> bool:
    return _library().is_file()


def _up_to_date() -> bool:
    """The build exists and no source or header is newer than it."""
    if not is_built():
        return False
    built = _library().stat().st_mtime
    sources = [f for f in Path(__file__).parent.iterdir() if f.suffix in (".cpp", ".h")]
    return all(f.stat().st_mtime <= built for f in sources)


def _load_built() -> ModuleType:
    import importlib.util

    import torch  # noqa: F401  (the library links against torch's, which must be loaded first)

    spec = importlib.util.spec_from_file_location(_NAME, _library())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build() -> ModuleType | None:
    """Compile (or load the cached build of) the kernels in this process; None if that fails."""
    if _state["module"] is None and _state["failed"] is None:
        try:
            if _up_to_date():
                _state["module"] = _load_built()
                return _state["module"]
            from torch.utils.cpp_extension import load

            _state["module"] = load(
                name=_NAME, sources=_SOURCES, extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"], verbose=False
            )
        except Exception as e:  # no compiler, no ninja, a failed build: the torch paths serve instead
            _state["failed"] = f"{type(e).__name__}: {e}"
            logger.warning("native kernels unavailable, using the torch paths (%s)", str(e).splitlines()[0])
    return _state["module"]


def loaded() -> ModuleType | None:
    """The kernels if this process has loaded them (an engine loads them when it starts, if they are built)."""
    return _state["module"]


def native_module() -> ModuleType | None:
    """The kernels if they are built (loading them takes milliseconds); else None, and a build is started."""
    if not enabled():
        return None
    if _state["module"] is not None or is_built():
        return build()
    if _state["spawned"] is None and _state["failed"] is None:
        # a detached process: the build outlives a short-lived caller (e.g. one `mistralpy run`)
        cmd = [sys.executable, "-m", "mistralpy.kernels"]
        subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _state["spawned"] = "yes"
    return None
