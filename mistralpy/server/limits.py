"""RequestLimits: how much one request may ask of the server, in one place. Each check raises LimitExceededError
(a 400; the body size is a 413 at the HTTP edge) whose message names the limit, e.g.
"stop has 20 strings; the limit is 16 (max_stop_strings)". The HTTP routes and the in-process Runner share them.

The defaults, and why:
- max_body_bytes 10 MiB: room for many full contexts of text or token ids; vLLM's FastAPI server sets no limit, so a
  client can make it buffer any size.
- max_request_tokens 262,144: prompt tokens x n, summed over a request's prompts, is the prefill work one request
  enqueues: 32 full 8k contexts, or OpenAI's largest n (128) over a 2k prompt. vLLM and llama.cpp bound only each
  prompt (by the context), so one request can enqueue n x prompts x context tokens.
- max_prompts 128: the prompts of one completion request (each gets its own stream); no peer caps it.
- max_n 128: OpenAI's documented maximum.
- max_sequences 2048: prompts x n, the sequences one request adds to the scheduler. Each holds ~2 KB of state
  (measured: 128 one-token prompts x n=128 took the embedded model's server from 439 to 474 MiB at peak); 2048
  keeps any request's share under ~5 MiB. Short prompts slip under max_request_tokens; this bounds them.
- max_stop_strings 16 and max_stop_length 128 characters: the detokenizer checks every stop string against each new
  token's text, so its work per token grows with count x length; OpenAI allows 4 strings, vLLM any.
- max_logit_bias 1024 entries: a ban list of a few hundred words; every entry is applied at each step.
- max_logprobs 20: chat's top_logprobs (OpenAI's maximum) and completions' logprobs (vLLM's default max_logprobs);
  the sampler's own ceiling too (SamplingParams.MAX_LOGPROBS).
- max_messages 2048: OpenAI's limit on a chat request's messages; the chat template renders each one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError, LimitExceededError
from ..sampling_params import MAX_LOGPROBS

if TYPE_CHECKING:
    from .protocol import ChatCompletionRequest, CompletionRequest, SamplingRequest

MIB = 1024 * 1024


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = 10 * MIB
    max_request_tokens: int = 262_144
    max_prompts: int = 128
    max_n: int = 128
    max_sequences: int = 2048
    max_stop_strings: int = 16
    max_stop_length: int = 128
    max_logit_bias: int = 1024
    max_logprobs: int = 20
    max_messages: int = 2048

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{f.name} must be a positive integer, got {value!r}")
        if self.max_logprobs > MAX_LOGPROBS:
            raise InvalidRequestError(f"max_logprobs must be at most {MAX_LOGPROBS}, got {self.max_logprobs}")

    def check_chat(self, body: ChatCompletionRequest) -> None:
        """Everything a chat request's fields can be checked for before its prompt is rendered."""
        self._check_sampling(body)
        self.check_messages(body.messages)
        if body.top_logprobs is not None:
            _at_most(body.top_logprobs, self.max_logprobs, "max_logprobs", "top_logprobs", "top_logprobs is {}")

    def check_completion(self, body: CompletionRequest) -> None:
        """Everything a completion request's fields can be checked for before its prompts are tokenized."""
        self._check_sampling(body)
        num_prompts = len(body.prompts())
        _at_most(num_prompts, self.max_prompts, "max_prompts", "prompt", "prompt has {} prompts")
        what = f"the request asks for {{}} sequences ({num_prompts} prompts x n={body.n})"
        _at_most(num_prompts * body.n, self.max_sequences, "max_sequences", "n", what)
        if body.logprobs is not None:
            _at_most(body.logprobs, self.max_logprobs, "max_logprobs", "logprobs", "logprobs is {}")

    def check_embedding(self, num_inputs: int) -> None:
        """An embedding request's inputs each become a sequence (OpenAI's own cap is 2048 inputs)."""
        _at_most(num_inputs, self.max_sequences, "max_sequences", "input", "input has {} items")

    def check_messages(self, messages: Sequence[Any]) -> None:
        _at_most(len(messages), self.max_messages, "max_messages", "messages", "messages has {} messages")

    def check_tokens(
        self, prompt_lengths: Iterable[int], n: int = 1, param: str = "prompt", noun: str = "prompt tokens"
    ) -> None:
        """The prompt tokens a request enqueues: each prompt's length x n, summed."""
        what = f"the request has {{}} {noun}" + (" x n" if n > 1 else "")
        _at_most(sum(prompt_lengths) * n, self.max_request_tokens, "max_request_tokens", param, what)

    def _check_sampling(self, body: SamplingRequest) -> None:
        _at_most(body.n, self.max_n, "max_n", "n", "n is {}")
        stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
        _at_most(len(stops), self.max_stop_strings, "max_stop_strings", "stop", "stop has {} strings")
        for i, stop in enumerate(stops):
            _at_most(len(stop), self.max_stop_length, "max_stop_length", "stop", f"stop[{i}] has {{}} characters")
        bias = body.logit_bias or {}
        _at_most(len(bias), self.max_logit_bias, "max_logit_bias", "logit_bias", "logit_bias has {} entries")


def _at_most(value: int, limit: int, name: str, param: str, what: str) -> None:
    if value > limit:
        raise LimitExceededError(f"{what.format(value)}; the limit is {limit} ({name})", name, param)
