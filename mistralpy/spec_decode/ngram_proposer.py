"""Prompt lookup (n-gram) proposals: the tokens that followed the latest earlier occurrence of a request's last n
tokens, for n from prompt_lookup_max down to prompt_lookup_min. No model: input-grounded answers copy spans."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NgramProposer:
    min_n: int
    max_n: int

    def propose(self, tokens: list[int], k: int) -> list[int]:
        """Up to k draft tokens to follow `tokens` (prompt + output so far); [] where no suffix recurs."""
        if k <= 0:
            return []
        length = len(tokens)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            start = _latest_match(tokens, n)
            if start is not None:
                return tokens[start + n : start + n + k]
        return []


def _latest_match(tokens: list[int], n: int) -> int | None:
    """Start of the latest occurrence of tokens[-n:] that ends before the last token, or None."""
    suffix = tokens[-n:]
    last = suffix[-1]
    for end in range(len(tokens) - 2, n - 2, -1):  # end: index of the candidate's last token
        if tokens[end] == last and tokens[end - n + 1 : end + 1] == suffix:
            return end - n + 1
    return None
