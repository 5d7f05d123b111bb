"""Handing freed heap back to the operating system. glibc keeps what a thread freed in that thread's arena for
reuse; after a rare large transient (a long prompt tokenized, a model repacked) that memory would stay resident."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any


def trim_heap() -> None:
    """malloc_trim(0): free pages of every arena back to the system (glibc); nothing elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, TypeError, AttributeError):  # not glibc
        return None
