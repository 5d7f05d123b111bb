"""Turns engine requests into RequestOutputs: detokenizes incrementally, applies stop strings, groups n > 1."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..outputs import CompletionOutput, Logprob, RequestOutput
from ..sampling_params import SamplingParams
from ..tokenizer import Tokenizer
from .detokenizer import IncrementalDetokenizer
from .request import Request, RequestStatus


@dataclass
class ParentRequest:
    """A user request; n > 1 samples are its children, each an engine Request."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    children: list[Request]
    detokenizers: list[IncrementalDetokenizer]
    deltas: list[str] = field(default_factory=list)  # text not yet delivered, per child
    sent_tokens: list[int] = field(default_factory=list)  # tokens delivered, per child
    sent_finish: list[bool] = field(default_factory=list)
    sent_prompt_logprobs: bool = False


def child_params(params: SamplingParams, index: int) -> SamplingParams:
    """Child i of a seeded request uses seed + i: reproducible, yet the n samples differ."""
    if params.seed is None or params.n == 1:
        return params
    return dataclasses.replace(params, n=1, seed=params.seed + index)


class OutputProcessor:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.parents: dict[str, ParentRequest] = {}
        self.child_to_parent: dict[str, tuple[ParentRequest, int]] = {}

    def add(self, parent: ParentRequest) -> None:
        self.parents[parent.request_id] = parent
        parent.deltas = [""] * len(parent.children)
        parent.sent_tokens, parent.sent_finish = [0] * len(parent.children), [False] * len(parent.children)
        for i, child in enumerate(parent.children):
            self.child_to_parent[child.request_id] = (parent, i)

    def process_token(self, req: Request) -> str | None:
        """Feed the request's newest token to its detokenizer; returns a matched stop string."""
        parent, i = self.child_to_parent[req.request_id]
        token = req.output_token_ids[-1]
        stopped_by_token = req.status == RequestStatus.FINISHED_STOPPED and (
            token in req.eos_token_ids or token == req.stop_reason
        )
        detok = parent.detokenizers[i]
        stop = None if stopped_by_token else detok.update([token])
        parent.deltas[i] += detok.get_next_delta(finished=req.is_finished)
        return stop

    def process_end(self, req: Request) -> tuple[str, ParentRequest]:
        """A request finished without a new token (it failed): the text its detokenizer held back goes out."""
        parent, i = self.child_to_parent[req.request_id]
        parent.deltas[i] += parent.detokenizers[i].get_next_delta(finished=True)
        return parent.request_id, parent

    def make_output(self, parent: ParentRequest, delta: bool = False) -> RequestOutput:
        """The request so far, or with `delta` what is new since its last delta output: each child's new text,
        tokens and logprobs (a child with nothing new left out, its finish reported once), the prompt's logprobs
        on the first one only. cumulative_logprob stays the running total."""
        outputs = [self._completion(parent, i, delta) for i in range(len(parent.children))]
        finished = all(c.is_finished for c in parent.children)
        first = parent.children[0]
        prompt_logprobs = None
        if first.sampling_params.prompt_logprobs is not None and not (delta and parent.sent_prompt_logprobs):
            prompt_logprobs = self._decorate(first.prompt_logprobs)
            parent.sent_prompt_logprobs = delta
        out = RequestOutput(
            request_id=parent.request_id,
            prompt=parent.prompt,
            prompt_token_ids=parent.prompt_token_ids,
            outputs=[c for c in outputs if c is not None],
            finished=finished,
            prompt_logprobs=prompt_logprobs,
            num_cached_tokens=first.num_cached_tokens,
        )
        if finished:
            self.remove(parent.request_id)
        return out

    def remove(self, request_id: str) -> None:
        parent = self.parents.pop(request_id, None)
        for child in parent.children if parent else []:
            self.child_to_parent.pop(child.request_id, None)

    def _completion(self, parent: ParentRequest, i: int, delta: bool) -> CompletionOutput | None:
        req = parent.children[i]
        logprobs = self._decorate(req.logprobs) if req.sampling_params.logprobs is not None else None
        cumulative = None
        if logprobs is not None:
            cumulative = sum(lp[t].logprob for lp, t in zip(logprobs, req.output_token_ids, strict=False))
        text, start = parent.detokenizers[i].output_text, 0
        if delta:
            start, new_finish = parent.sent_tokens[i], req.finish_reason is not None and not parent.sent_finish[i]
            if start == len(req.output_token_ids) and not parent.deltas[i] and not new_finish:
                return None
            text, parent.deltas[i] = parent.deltas[i], ""
            parent.sent_tokens[i], parent.sent_finish[i] = len(req.output_token_ids), req.finish_reason is not None
        return CompletionOutput(
            index=i,
            text=text,
            token_ids=req.output_token_ids[start:],
            finish_reason=req.finish_reason,
            stop_reason=req.stop_reason,
            error=req.error,
            logprobs=None if logprobs is None else logprobs[start:],
            cumulative_logprob=cumulative,
        )

    def _decorate(self, entries: list[dict[int, Logprob] | None]) -> list[dict[int, Logprob] | None]:
        """Fill in decoded_token for each logprob entry (done once; entries are shared with the request)."""
        for entry in entries:
            for token_id, lp in (entry or {}).items():
                if lp.decoded_token is None:
                    lp.decoded_token = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return entries
