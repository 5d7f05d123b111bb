"""Token masks: the allowed-token bitmasks of a batch's constrained rows, filled by llguidance in parallel, and their
application to logits rows (-inf where a token is not allowed): by the native kernel where it is loaded, else by torch.

A bitmask row is llguidance's: int32 words, bit t % 32 of word t // 32 set where token t is allowed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import llguidance
import numpy as np
import torch

from .request_matcher import RequestMatcher

# The native kernel's signature: (logits, bitmask, rows) -> None, in place (kernels/token_mask.cpp).
MaskKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]

_executor: llguidance.LLExecutor | None = None
_executor_lock = threading.Lock()
# Bit b of an int32 word as a value to AND with (bit 31's is -2**31): `word & value == 0` bans the token at once, the
# cheapest expansion of those measured (shifts, byte tables).
_BIT_VALUES = (torch.ones(32, dtype=torch.int64) << torch.arange(32)).to(torch.int32)


def _shared_executor() -> llguidance.LLExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = llguidance.LLExecutor()
        return _executor


def mask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def fill_bitmask(matchers: Sequence[RequestMatcher], vocab_size: int) -> torch.Tensor:
    """(len(matchers), mask_words(vocab_size)) int32: which tokens each matcher allows next. llguidance fills the
    rows in parallel, with the GIL released."""
    words = mask_words(vocab_size)
    # numpy's zeros: torch's would fill in parallel on the threads the model's forward is using meanwhile
    bitmask = torch.from_numpy(np.zeros((len(matchers), words), dtype=np.int32))
    if matchers:
        pairs = [(m.matcher, i) for i, m in enumerate(matchers)]
        _shared_executor().unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), words * 4, len(matchers))
    return bitmask


def banned_tokens(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(rows, vocab_size) bool from an (rows, words) int32 bitmask: True where a token is not allowed, which every
    token past the mask's width is."""
    rows, words = bitmask.shape
    banned = ((bitmask.unsqueeze(2) & _BIT_VALUES) == 0).view(rows, words * 32)
    if words * 32 >= vocab_size:
        return banned[:, :vocab_size]
    return torch.cat([banned, banned.new_ones(rows, vocab_size - words * 32)], dim=1)


def apply_bitmask(
    logits: torch.Tensor, bitmask: torch.Tensor, rows: Sequence[int], kernel: MaskKernel | None = None
) -> None:
    """Disallowed tokens of logits rows `rows` (bitmask row i masks logits row rows[i]) set to -inf, in place."""
    if not rows:
        return
    if bitmask.shape[0] != len(rows):
        raise ValueError(f"{bitmask.shape[0]} masks for {len(rows)} rows")
    if kernel is not None and logits.dtype == torch.float32 and logits.stride(1) == 1 and logits.device.type == "cpu":
        kernel(logits, bitmask.contiguous(), torch.tensor(rows, dtype=torch.long))
        return
    banned = banned_tokens(bitmask, logits.shape[1]).to(logits.device)
    if list(rows) == list(range(logits.shape[0])):
        logits.masked_fill_(banned, float("-inf"))
    else:
        for i, row in enumerate(rows):  # in place: an indexed copy and its scatter back cost more
            logits[row].masked_fill_(banned[i], float("-inf"))
