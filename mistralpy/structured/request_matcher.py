"""RequestMatcher: one request's llguidance matcher, kept in step with the request's output tokens."""

from __future__ import annotations

from collections.abc import Sequence

import llguidance

from ..errors import MistralpyError


class RequestMatcher:
    def __init__(self, matcher: llguidance.LLMatcher) -> None:
        self.matcher = matcher
        self.num_consumed = 0

    def sync(self, output_token_ids: Sequence[int]) -> None:
        """Make the matcher's state that after `output_token_ids`: consume the tokens it has not seen, or roll back
        the ones the request no longer has. A token is never consumed twice (preemption recomputes the KV only)."""
        n = len(output_token_ids)
        if self.num_consumed > n:
            self._check(self.matcher.rollback(self.num_consumed - n), "roll back")
        elif self.num_consumed < n:
            self._check(self.matcher.consume_tokens(list(output_token_ids[self.num_consumed :])), "consume")
        self.num_consumed = n

    def consume(self, token_id: int) -> None:
        self._check(self.matcher.consume_token(token_id), "consume")
        self.num_consumed += 1

    def is_stopped(self) -> bool:
        return self.matcher.is_stopped()

    def _check(self, ok: bool, what: str) -> None:
        # the mask only lets through tokens the grammar allows, so this is an engine bug, not a request's fault
        if not ok:
            raise MistralpyError(f"the structured-output matcher could not {what} a token: {self.matcher.get_error()}")
