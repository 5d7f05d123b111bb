"""Hand back what loading used: file pages of a memory-mapped model file, and heap freed by the repacking.

Quantized weights are repacked into new tensors at load, so the mapped file's pages are dead once their module is
built: the loader hands them back after every module (`release_file_pages`), which keeps the load's peak ~one
module above the model's own size instead of a whole file above it. The repacking's transient tensors leave freed
heap that glibc keeps unless asked (`release_load_memory` at the end). (A fixed glibc mmap threshold would also stop
the heap fragmenting while serving, but every large tensor then costs fresh page faults: ~0.7 s more to load.)"""

from __future__ import annotations

import ctypes
import ctypes.util


def release_load_memory(source) -> None:
    release_file_pages(source)
    _malloc_trim()


def release_file_pages(source) -> None:
    release = getattr(source, "release_pages", None)
    if release is not None:
        release()


def _malloc_trim() -> None:
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, TypeError, AttributeError):  # not glibc: nothing to trim
        return
    trim(0)
