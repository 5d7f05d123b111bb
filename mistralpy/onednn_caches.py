"""Bounds on oneDNN's shape-keyed caches. A bf16 / f16 matmul on the CPU goes through oneDNN, which keeps a compiled
primitive for every shape it has seen in two caches (oneDNN's own and ideep's), each of 1024 entries by default.
Every engine step has its own number of tokens, so a serving engine with dense half-precision weights fills both.
Measured with a tiny bf16 Llama, a server's resident memory grew by 400 MiB over 2,600 requests and was still
growing; a bare bf16 linear over 2,000 row counts grew a process by 700 MiB. At 64 entries the growth stops at
~70 MiB while a steady decode batch (the same shapes every step) still finds its primitives."""

from __future__ import annotations

import os

CAPACITY = 64
VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")  # oneDNN's cache; ideep's (in torch)


def bound_onednn_caches() -> None:
    """Set both capacities unless the user did. oneDNN and ideep read them when their caches are first used, so
    this must run before the process's first half-precision matmul (a later call changes nothing)."""
    for name in VARIABLES:
        os.environ.setdefault(name, str(CAPACITY))
