"""Prefix-cache keys: SHA-256 digests chained block by block.

A block's key is the digest of its parent's key and its token ids; the chain starts at a root that digests everything
else that changes the K/V of equal tokens: the model (its file, dtype, K/V format), the rotary table a request reads
(LongRoPE's long rows), and a caller's salt (a tenant's `cache_salt`). Python's `hash()` is 64 bits and invertible for
tuples of ints, so two prompts could be made to share a key (vLLM's GHSA-rm76-4mrf-v9r8); SHA-256 cannot be.
"""

from __future__ import annotations

import hashlib
from array import array

_VERSION = b"mistralpy-prefix-cache-v1"


def model_key(*parts: object) -> bytes:
    """The identity of what computes the K/V (model path, dtype, K/V format, quantization...), as a digest."""
    return _digest(_VERSION, *(repr(p).encode() for p in parts))


def root_key(
    model: bytes, rotary_table: int | None = None, salt: str | None = None, adapter: bytes | None = None
) -> bytes:
    """The key a request's chain starts from: equal tokens under different roots never share K/V. `adapter`: the
    digest of a request's LoRA adapter, which changes every layer's K/V."""
    parts = [model, repr(rotary_table).encode(), b"" if salt is None else b"salt:" + salt.encode()]
    return _digest(*parts, *([] if adapter is None else [b"lora:" + adapter]))


def block_key(parent: bytes, token_ids: list[int] | tuple[int, ...], images: bytes = b"") -> bytes:
    """`images`: the hashes of the images whose tokens the block holds (equal placeholder tokens, other K/V)."""
    tokens = array("q", token_ids).tobytes()
    return _digest(parent, tokens, b"images:" + images) if images else _digest(parent, tokens)


def _digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:  # each part length-prefixed: no two different part lists feed the same bytes
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()
