"""The allowed-token masks of a batch's constrained rows, filled by llguidance in parallel and applied to logits."""

from __future__ import annotations

import threading

import llguidance
import torch

from .request_matcher import RequestMatcher

_executor: llguidance.LLExecutor | None = None
_executor_lock = threading.Lock()
_BITS = torch.arange(32, dtype=torch.int32)


def _shared_executor() -> llguidance.LLExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = llguidance.LLExecutor()
        return _executor


def allowed_tokens(matchers: list[RequestMatcher], vocab_size: int) -> torch.Tensor:
    """(len(matchers), vocab_size) bool: which tokens each matcher allows next."""
    words = (vocab_size + 31) // 32
    bitmask = torch.zeros(len(matchers), words, dtype=torch.int32)
    pairs = [(m.matcher, i) for i, m in enumerate(matchers)]
    _shared_executor().unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), words * 4, len(matchers))
    bits = (bitmask.unsqueeze(2) >> _BITS) & 1
    return bits.view(len(matchers), words * 32)[:, :vocab_size].bool()


def apply_token_masks(logits: torch.Tensor, rows: list[int], matchers: list[RequestMatcher]) -> None:
    """Disallowed tokens of each constrained row set to -inf, in place."""
    allowed = allowed_tokens(matchers, logits.shape[1]).to(logits.device)
    index = torch.tensor(rows, dtype=torch.long, device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
