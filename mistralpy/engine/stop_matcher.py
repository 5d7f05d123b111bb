"""StopMatcher: finds stop strings in a growing text, each character examined once (an Aho-Corasick automaton).

Searching every stop string over a window of the text after every token costs O(stops x window) per token, and one
request with many long stop strings would stall the engine loop that serves everyone. The automaton reads each new
character once, whatever the number of stop strings: amortized O(1) work per character (a failure-link walk is paid
for by the characters that built the depth it unwinds). Its state is the longest tail of the text that is a prefix of
some stop string, which is exactly what must be held back from a stream while it could still grow into a stop string.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

_ROOT = 0


@dataclass(frozen=True)
class StopHit:
    """A stop string's occurrence: `start` is its offset in all the text fed so far."""

    start: int
    stop: str


@dataclass(frozen=True)
class _Automaton:
    stops: tuple[str, ...]  # distinct and non-empty, in the caller's order (earlier wins a tie)
    goto: tuple[dict[str, int], ...]  # trie edges
    fail: tuple[int, ...]  # the state of the longest proper suffix that is also a trie node
    depth: tuple[int, ...]  # characters from the root
    longest: tuple[int, ...]  # index into `stops` of the longest stop string ending at this state, or -1


@functools.lru_cache(maxsize=64)
def _build(stops: tuple[str, ...]) -> _Automaton:
    goto: list[dict[str, int]] = [{}]
    depth, ends = [0], [-1]
    for index, stop in enumerate(stops):
        state = _ROOT
        for ch in stop:
            if ch not in goto[state]:
                goto[state][ch] = len(goto)
                goto.append({})
                depth.append(depth[state] + 1)
                ends.append(-1)
            state = goto[state][ch]
        ends[state] = index
    fail, longest = [_ROOT] * len(goto), list(ends)
    queue = deque(goto[_ROOT].values())
    while queue:  # breadth first: a state's failure target is shallower, so it is final when read
        state = queue.popleft()
        if longest[state] < 0:
            longest[state] = longest[fail[state]]
        for ch, child in goto[state].items():
            fail[child] = _ROOT if state == _ROOT else _step(goto, fail, fail[state], ch)
            queue.append(child)
    return _Automaton(stops, tuple(goto), tuple(fail), tuple(depth), tuple(longest))


def _step(goto: Sequence[dict[str, int]], fail: Sequence[int], state: int, ch: str) -> int:
    """The state after reading `ch` in `state`."""
    while state != _ROOT and ch not in goto[state]:
        state = fail[state]
    return goto[state].get(ch, _ROOT)


class StopMatcher:
    """Feeds text once; reports the earliest-starting stop string occurrence that ends in the newly fed text."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._auto = _build(tuple(dict.fromkeys(s for s in stops if s)))
        self._max_len = max(map(len, self._auto.stops), default=0)
        self._state = _ROOT
        self._fed = 0  # characters fed so far

    @property
    def partial_len(self) -> int:
        """Length of the longest tail of the text fed so far that is a (proper, absent a hit) stop string prefix."""
        return self._auto.depth[self._state]

    def feed(self, text: str) -> StopHit | None:
        """Read `text`. Among the occurrences ending in it, the one starting earliest wins (then the earlier stop
        string in the caller's list); after a hit the matcher has done its job and is not fed again."""
        auto, best, best_index = self._auto, None, -1
        for offset, ch in enumerate(text):
            end = self._fed + offset + 1
            if best is not None and end - self._max_len > best.start:
                break  # no occurrence ending here or later can start at or before the best one
            self._state = _step(auto.goto, auto.fail, self._state, ch)
            index = auto.longest[self._state]
            if index >= 0:
                stop = auto.stops[index]
                start = end - len(stop)
                if best is None or (start, index) < (best.start, best_index):
                    best, best_index = StopHit(start, stop), index
        self._fed += len(text)
        return best
