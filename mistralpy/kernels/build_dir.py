"""Where a build lives: one directory per build key, under $TORCH_EXTENSIONS_DIR or ~/.cache/mistralpy/kernels.

<root>/mistralpy_native_<key>/
    mistralpy_native_<key>.so   the finished library, renamed into place whole (never a half-written file)
    key.json                    what the key was made of (the loader checks it before loading)
    build.log                   the compiler's output of the last build
    FAILED                      the failure marker: this key failed to build; no process builds it again
    builder.lock                the builder's flock (the kernel drops it when its holder dies)
    build/                      torch's extension loader's work: build.ninja, objects, its `lock` baton
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .build_key import BuildKey

RETRY_HINT = "to try again: python -m mistralpy.kernels --rebuild"


def cache_root() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mistralpy" / "kernels"


@dataclass(frozen=True)
class BuildDir:
    path: Path
    name: str

    @classmethod
    def of(cls, key: BuildKey, root: Path | None = None) -> BuildDir:
        return cls((root or cache_root()) / key.name, key.name)

    @property
    def library(self) -> Path:
        return self.path / f"{self.name}.so"

    @property
    def key_file(self) -> Path:
        return self.path / "key.json"

    @property
    def log(self) -> Path:
        return self.path / "build.log"

    @property
    def failure_marker(self) -> Path:
        return self.path / "FAILED"

    @property
    def builder_lock(self) -> Path:
        return self.path / "builder.lock"

    @property
    def torch_dir(self) -> Path:
        return self.path / "build"

    @property
    def torch_baton(self) -> Path:
        """torch's FileBaton: created by its loader for a build, removed after; left behind by a killed build."""
        return self.torch_dir / "lock"

    def failure(self) -> str | None:
        """The recorded reason this key failed to build, or None."""
        try:
            return self.failure_marker.read_text().strip() or "unknown reason"
        except FileNotFoundError:
            return None
        except OSError as e:  # there, but unreadable: a failure all the same
            return f"unknown reason ({self.failure_marker} cannot be read: {e})"

    def record_failure(self, reason: str) -> None:
        write_atomically(self.failure_marker, f"{reason}\nlog: {self.log}\n{RETRY_HINT}\n".encode())

    def forget(self) -> None:
        """Drop the failure marker and the library (a rebuild); the objects stay for ninja to reuse."""
        for path in (self.failure_marker, self.library):
            path.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` under a temporary name next to `path`, then rename it into place: a reader sees the old file
    or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
