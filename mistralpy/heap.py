"""Handing freed heap back to the operating system. glibc keeps what a thread freed in that thread's arena for
reuse; after a rare large transient (a long prompt tokenized, a model repacked, a prefill chunk's activations) that
memory would stay resident."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from functools import cache
from typing import Any

# A step of at least this many tokens is a prefill's: its activations are several times a decode step's (at 512
# float32 tokens of the embedded model glibc kept ~23 MiB of them, against ~10 for 32 decode rows).
WIDE_STEP_TOKENS = 256
M_ARENA_MAX = -8  # mallopt's parameter numbers (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
# Allocations from this size up get pages of their own, returned when freed: a float32 decode step's logits (6.3 MB
# at 32 rows) and a float32 prefill chunk's widest activations (512 x 3072 x 4 bytes). Smaller ones stay in the heap,
# so a bf16 step allocates as before.
MMAP_THRESHOLD_BYTES = 4 << 20


def trim_heap() -> None:
    """malloc_trim(0): free pages of every arena back to the system (glibc); nothing elsewhere."""
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)


def one_arena(environ: dict | os._Environ = os.environ, mallopt: Callable[[int, int], int] | None = None) -> bool:
    """Every thread allocates from glibc's main arena from now on (mallopt M_ARENA_MAX 1, as MALLOC_ARENA_MAX=1 does),
    unless MALLOC_ARENA_MAX is set; whether it was set here. malloc_trim returns the free pages inside a thread's
    arena but never its top chunk, where a server's engine thread (its steps run on the loop thread) kept a prefill's
    freed activations: 14 MiB of the portable level's 32-chat peak. The main arena's top is trimmed too. For a
    process's start, before its threads allocate: arenas made before stay in use."""
    return _mallopt_unless_set("MALLOC_ARENA_MAX", M_ARENA_MAX, 1, environ, mallopt)


def fixed_mmap_threshold(
    environ: dict | os._Environ = os.environ, mallopt: Callable[[int, int], int] | None = None
) -> bool:
    """Allocations of MMAP_THRESHOLD_BYTES and more are mmapped from now on (mallopt M_MMAP_THRESHOLD, as
    MALLOC_MMAP_THRESHOLD_ does), unless MALLOC_MMAP_THRESHOLD_ is set; whether it was set here. glibc otherwise
    raises its threshold to the size of each mmapped block freed, up to 32 MiB, after which a step's large transients
    come from the heap and its freed pages stay resident between trims: the portable level's 32-chat peak was 447.4
    and 450.8 MiB without this, 446.5 and 446.3 with it (docs/BENCHMARKS.md)."""
    return _mallopt_unless_set("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES, environ, mallopt)


def _mallopt_unless_set(
    variable: str, param: int, value: int, environ: dict | os._Environ, mallopt: Callable[[int, int], int] | None
) -> bool:
    if variable in environ:
        return False
    mallopt = mallopt or _libc("mallopt")
    return mallopt is not None and mallopt(param, value) == 1


class StepTrim:
    """Trims the heap before the first narrow step after a wide one (WIDE_STEP_TOKENS: a prefill's), so that the
    decode steps which follow do not keep a prefill's freed activations resident while their K/V grows (LLM.chat of 32
    chats in float32: 13 MiB less while they decode; a thread arena's top chunk is not trimmed: see one_arena). Once
    per run of wide steps, not after every step: a trim costs 1-2 ms and the next step's page faults
    (docs/BENCHMARKS.md)."""

    def __init__(self, trim: Callable[[], None] = trim_heap, wide_tokens: int = WIDE_STEP_TOKENS) -> None:
        self.trim, self.wide_tokens, self.after_wide = trim, wide_tokens, False

    def before_step(self, num_tokens: int) -> bool:
        """Trims before a step of num_tokens if it is narrow and the step before was wide; whether it did."""
        wide = num_tokens >= self.wide_tokens
        trimmed = self.after_wide and not wide
        self.after_wide = wide
        if trimmed:
            self.trim()
        return trimmed


@cache
def _libc(name: str) -> Any:
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)
    except (OSError, TypeError, AttributeError):  # not glibc
        return None
