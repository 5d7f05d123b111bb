"""Hand back what loading used: file pages of a memory-mapped model file, and heap freed by the repacking.

Quantized weights are repacked into new tensors at load, so the mapped file's pages are mostly dead afterwards, and
the transient tensors of the repacking leave freed heap that glibc keeps unless asked. Both count as resident memory
(~100 MB and ~90 MB for the embedded model) until handed back here."""

from __future__ import annotations

import ctypes
import ctypes.util


def release_load_memory(source) -> None:
    release = getattr(source, "release_pages", None)
    if release is not None:
        release()
    _malloc_trim()


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to trim
        return
    trim(0)
