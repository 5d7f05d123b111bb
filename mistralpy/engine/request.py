"""Request: one sequence being generated, advanced by num_computed_tokens."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..embed.pooling import PoolingParams
    from ..multimodal.request_images import RequestImages
    from ..outputs import Logprob
    from ..sampling_params import SamplingParams
    from ..structured.request_matcher import RequestMatcher


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    FINISHED_ERROR = "error"  # this request failed alone (Request.error says why); the batch went on

    @property
    def is_finished(self) -> bool:
        return self not in (RequestStatus.WAITING, RequestStatus.RUNNING)


@dataclass
class Request:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_ids: frozenset[int] = frozenset()
    arrival_time: float = field(default_factory=time.monotonic)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache at the last admission
    block_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    stop_reason: int | str | None = None  # the stop token id or stop string that finished it
    num_preemptions: int = 0
    matcher: RequestMatcher | None = None  # llguidance's state where sampling_params.structured_outputs is set
    error: str | None = None  # why it finished with FINISHED_ERROR
    generator: Any = None  # torch.Generator owned by this request when sampling_params.seed is set
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)  # one entry per output token
    prompt_logprobs: list[dict[int, Logprob] | None] = field(default_factory=list)  # one per prompt token
    # The prefix-cache key chain starts here (block_hash.root_key): it covers the model, the rotary table (LongRoPE's
    # long rows give equal tokens other K) and the caller's cache_salt, so requests under different roots never share
    prefix_root: bytes = b""
    lora_slot: int = -1  # the LoRA slot of this request's adapter (mistralpy.lora), -1 for none
    # tokens at the start whose KV blocks the prefix cache may hold or give (None: all); X-LoRA's fixed scalings make
    # later tokens' K/V depend on more than the tokens before them (lora/xlora/non_granular.py)
    cache_limit: int | None = None
    spec_token_ids: list[int] = field(default_factory=list)  # draft tokens to verify next step (spec_decode)
    # An embedding request: prefill only, scheduled whole; its output is its hidden states pooled, then it finishes
    pooling: PoolingParams | None = None
    images: RequestImages | None = None  # its prompt's images (vision-language models): embeddings, token ranges

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def merge_prompt_logprobs(self, start: int, entries: list) -> None:
        """Entries predict prompt tokens start+1...; position 0 has no logprob (None). Recomputed chunks overwrite."""
        if not self.prompt_logprobs:
            self.prompt_logprobs.append(None)
        self.prompt_logprobs[start + 1 : start + 1 + len(entries)] = entries

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def finish_reason(self) -> str | None:
        return self.status.value if self.status.is_finished else None
