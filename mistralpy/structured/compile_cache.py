"""GrammarCompiler: a spec's grammar compiled once against the model's vocabulary (an LLMatcher kept as a template);
each request's matcher is a copy of it. Thread-safe: the server compiles in worker threads (structured_request.py),
so the engine's thread only copies a template."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import llguidance

from ..errors import InvalidRequestError
from ..tokenizer import Tokenizer
from .ll_tokenizer import ll_tokenizer
from .params import StructuredOutputsParams
from .request_matcher import RequestMatcher

# Compiled grammars kept (least recently used dropped): a server sees a few schemas many times.
_CACHE_SIZE = 64


class GrammarCompiler:
    def __init__(self, tokenizer: Tokenizer, eos_token_ids: frozenset[int], vocab_size: int) -> None:
        self.tokenizer, self.eos_token_ids, self.vocab_size = tokenizer, eos_token_ids, vocab_size
        self._templates: OrderedDict[tuple[str, str], llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        # for metrics: time spent compiling, grammars compiled, requests whose grammar was already compiled
        self.compile_seconds = 0.0
        self.num_compiled = 0
        self.num_cache_hits = 0

    def template(self, spec: StructuredOutputsParams) -> llguidance.LLMatcher:
        """The spec's compiled grammar (from the cache, or compiled now): call once per request."""
        with self._lock:
            template = self._templates.get(spec.key)
            if template is not None:
                self._templates.move_to_end(spec.key)
                self.num_cache_hits += 1
                return template
        start = time.perf_counter()
        vocab = ll_tokenizer(self.tokenizer, self.eos_token_ids, self.vocab_size)
        template = llguidance.LLMatcher(vocab, spec.llguidance_grammar, log_level=0)  # releases the GIL
        if template.is_error():
            raise InvalidRequestError(f"Invalid {spec.label}: {template.get_error()}")
        _check_matches_something(template, spec)
        with self._lock:
            self.compile_seconds += time.perf_counter() - start
            self.num_compiled += 1
            self._templates[spec.key] = template
            while len(self._templates) > _CACHE_SIZE:
                self._templates.popitem(last=False)
        return template

    @staticmethod
    def matcher(template: llguidance.LLMatcher) -> RequestMatcher:
        """A fresh matcher for one request (one per child of n > 1)."""
        return RequestMatcher(template.deep_copy())


def _check_matches_something(template: llguidance.LLMatcher, spec: StructuredOutputsParams) -> None:
    """A grammar no output matches (e.g. the regex `[a&&b]`) compiles, but its first mask puts llguidance in an error
    state that allows only EOS: the request would end at once with "stop" and an output the grammar does not match."""
    probe = template.deep_copy()
    probe.compute_bitmask()
    if probe.is_error():
        reason = probe.get_error().split("\n", 1)[0]
        raise InvalidRequestError(f"Invalid {spec.label}: no output matches it (llguidance: {reason})")
