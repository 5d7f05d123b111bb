"""A verify step's logits rows: a request with K draft tokens gets K + 1 rows, row j sampled as if its output already
held drafts[:j], with the request's full sampler settings (penalties, min_tokens, bias, temperature, top-k/p, min-p).

Acceptance for a proposal that is one token (a point mass q, as prompt lookup's): draft j is accepted exactly when the
token drawn at row j equals it, and the first token drawn unequal to its draft is emitted in its place. That is
rejection sampling with q = delta(draft): accepted with probability p(draft) = min(1, p/q), else a draw from
max(0, p - q) renormalised, which is p without the draft. It is also plain decoding itself, token by token: a seeded
row j draws the uniform plain decoding would draw for that token, so a seeded request's text does not depend on
speculation, K or the batch."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..engine.request import Request


@dataclass
class VerifySpan:
    request: Request
    drafts: list[int]
    lo: int  # the request's rows in the step's logits rows: [lo, lo + len(drafts) + 1)
    states: list[torch.Tensor] | None = None  # a seeded sampled request's generator state after j draws, j = 0..K+1


def expand(request: Request, drafts: list[int], lo: int, rows: list[Request]) -> VerifySpan:
    """Append the request's K + 1 row views to `rows`."""
    span = VerifySpan(request, drafts, lo)
    params = request.sampling_params
    gens: list[torch.Generator | None] = [None] * (len(drafts) + 1)
    if params.seed is not None and not params.is_greedy:
        span.states = _generator_states(request, len(drafts) + 2)
        gens = [_generator_at(state) for state in span.states[:-1]]
    for j, gen in enumerate(gens):
        view = copy.copy(request)
        view.output_token_ids = request.output_token_ids + drafts[:j]
        view.generator = gen
        rows.append(view)
    return span


def accept(span: VerifySpan, drawn: list[int]) -> list[int]:
    """The tokens the step emits: the drawn tokens up to and including the first that differs from its draft
    (or the bonus token after K accepted drafts). A seeded request's generator moves past the draws it used."""
    emitted = []
    for j, token in enumerate(drawn):
        emitted.append(token)
        if j == len(span.drafts) or token != span.drafts[j]:
            break
    if span.states is not None:
        span.request.generator.set_state(span.states[len(emitted)])
    return emitted


def _generator_states(request: Request, count: int) -> list[torch.Tensor]:
    """The request's generator state now and after each of count - 1 draws of one float32 uniform (the sampler's)."""
    if request.generator is None:
        request.generator = torch.Generator()
        request.generator.manual_seed(request.sampling_params.seed)
    scratch = _generator_at(request.generator.get_state())
    states = [scratch.get_state()]
    for _ in range(count - 1):
        torch.rand(1, dtype=torch.float32, generator=scratch)
        states.append(scratch.get_state())
    return states


def _generator_at(state: torch.Tensor) -> torch.Generator:
    gen = torch.Generator()
    gen.set_state(state)
    return gen
