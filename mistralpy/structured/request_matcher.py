"""RequestMatcher: one request's llguidance matcher, kept in step with the request's output tokens."""

from __future__ import annotations

from collections.abc import Sequence

import llguidance


class RequestMatcher:
    """A matcher that cannot go on (llguidance refused a token or ran past one of its parser limits) keeps its
    message in `error` rather than raising: the request fails alone, and the batch it is in goes on."""

    def __init__(self, matcher: llguidance.LLMatcher) -> None:
        self.matcher = matcher
        self.num_consumed = 0

    def sync(self, output_token_ids: Sequence[int]) -> None:
        """Make the matcher's state that after `output_token_ids`: consume the tokens it has not seen, or roll back
        the ones the request no longer has. A token is never consumed twice (preemption recomputes the KV only)."""
        n = len(output_token_ids)
        if self.error is not None:
            return
        if self.num_consumed > n:
            self.matcher.rollback(self.num_consumed - n)
        elif self.num_consumed < n:
            self.matcher.consume_tokens(list(output_token_ids[self.num_consumed :]))
        self.num_consumed = n

    def consume(self, token_id: int) -> None:
        if self.error is None:
            self.matcher.consume_token(token_id)
        self.num_consumed += 1

    @property
    def error(self) -> str | None:
        """llguidance's message once the matcher cannot go on, its state dump left out."""
        if not self.matcher.is_error():
            return None
        return self.matcher.get_error().split("\n<state>", 1)[0]
