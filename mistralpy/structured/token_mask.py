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
# Each int32 word as its 4 bytes (shifts: byte order does not matter), each byte as its 8 bits through a table: an
# (M, W, 4) intermediate, where expanding every bit by shifts made an (M, W, 32) int32 one.
_BYTE_SHIFTS = torch.tensor([0, 8, 16, 24], dtype=torch.int32)
_BYTE_BITS = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).bool()


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


def allowed_tokens(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(rows, vocab_size) bool from an (rows, words) int32 bitmask; tokens past its width are not allowed."""
    rows, words = bitmask.shape
    octets = ((bitmask.unsqueeze(2) >> _BYTE_SHIFTS) & 0xFF).long()
    bits = _BYTE_BITS[octets].view(rows, words * 32)
    if words * 32 >= vocab_size:
        return bits[:, :vocab_size]
    return torch.cat([bits, bits.new_zeros(rows, vocab_size - words * 32)], dim=1)


def apply_bitmask(
    logits: torch.Tensor, bitmask: torch.Tensor, rows: Sequence[int], kernel: MaskKernel | None = None
) -> None:
    """Disallowed tokens of logits rows `rows` (bitmask row i masks logits row rows[i]) set to -inf, in place."""
    if not rows:
        return
    if bitmask.shape[0] != len(rows):
        raise ValueError(f"{bitmask.shape[0]} masks for {len(rows)} rows")
    index = torch.tensor(rows, dtype=torch.long, device=logits.device)
    if kernel is not None and logits.dtype == torch.float32 and logits.stride(1) == 1 and logits.device.type == "cpu":
        kernel(logits, bitmask.contiguous(), index)
        return
    banned = ~allowed_tokens(bitmask, logits.shape[1]).to(logits.device)
    if list(rows) == list(range(logits.shape[0])):
        logits.masked_fill_(banned, float("-inf"))
    else:
        logits[index] = logits[index].masked_fill(banned, float("-inf"))
