"""Hand back what loading used: file pages of a memory-mapped model file, and heap freed by the repacking.

Quantized weights are repacked into new tensors at load, so the mapped file's pages are mostly dead afterwards, and
the transient tensors of the repacking leave freed heap that glibc keeps unless asked. Both count as resident memory
(~100 MB and ~40 MB for the embedded model) until handed back here. (A fixed glibc mmap threshold would also stop
the heap fragmenting while serving, but every large tensor then costs fresh page faults: ~0.7 s more to load.)"""

from __future__ import annotations

import ctypes
import ctypes.util


def release_load_memory(source) -> None:
    release = getattr(source, "release_pages", None)
    if release is not None:
        release()
    _malloc_trim()


def _malloc_trim() -> None:
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, TypeError, AttributeError):  # not glibc: nothing to trim
        return
    trim(0)
