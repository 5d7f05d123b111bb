"""The llguidance view of a model's vocabulary: an LLTokenizer made once per Tokenizer from its `tokenizers` backend,
with the engine's EOS ids and the model's vocabulary size (the logits' width)."""

from __future__ import annotations

import threading
import weakref

import llguidance

from ..tokenizer import Tokenizer

_lock = threading.Lock()
_made: weakref.WeakKeyDictionary[Tokenizer, dict[tuple, llguidance.LLTokenizer]] = weakref.WeakKeyDictionary()


def ll_tokenizer(tokenizer: Tokenizer, eos_token_ids: frozenset[int], vocab_size: int) -> llguidance.LLTokenizer:
    """Made once per (Tokenizer, EOS ids, vocabulary size): building one walks the whole vocabulary (~1 s)."""
    key = (tuple(sorted(eos_token_ids)), vocab_size)
    with _lock:
        per_tokenizer = _made.setdefault(tokenizer, {})
        if key not in per_tokenizer:
            per_tokenizer[key] = llguidance.LLTokenizer(
                tokenizer.backend.to_str(), n_vocab=vocab_size, eos_token=list(key[0])
            )
        return per_tokenizer[key]
