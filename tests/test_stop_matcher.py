"""Stop strings: the incremental matcher against a naive reference (str.find over the whole text after every update),
over random texts, stop lists and token splits, and adversarial stop lists; the work per character is bounded."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from mistralpy.engine.detokenizer import IncrementalDetokenizer
from mistralpy.engine.stop_matcher import StopMatcher


class PieceTokenizer:
    """Token i decodes to pieces[i]: any split of a text into tokens, with no partial characters."""

    def __init__(self, pieces: Sequence[str]) -> None:
        self.pieces = list(pieces)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.pieces[i] for i in ids)


def reference(updates: list[str], stops: list[str], include: bool) -> tuple[list[str], str, str | None]:
    """What a stream may show after each update, the final text and the stop string, by brute force: after each
    update the whole text is searched for every stop string; the occurrence starting first wins (then the earlier
    stop string); without include_stop_str_in_output, any tail that is a proper prefix of a stop string is held."""
    text, shown = "", []
    for piece in updates:
        text += piece
        found = [(text.find(s), i, s) for i, s in enumerate(stops) if s and s in text]
        if found:
            index, _, stop = min(found)
            text = text[: index + len(stop)] if include else text[:index]
            shown.append(text)
            return shown, text, stop
        held = 0 if include else max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        shown.append(text[: len(text) - held])
    return shown, text, None


def run(updates: list[list[str]], stops: list[str], include: bool) -> tuple[list[str], str, str | None]:
    """The detokenizer fed token by token in the given update groups; what it had shown after each update."""
    pieces = [piece for group in updates for piece in group]
    detok = IncrementalDetokenizer(PieceTokenizer(pieces), [], stop=stops, include_stop_str_in_output=include)
    ids, shown, emitted, stop = iter(range(len(pieces))), [], "", None
    for group in updates:
        stop = detok.update([next(ids) for _ in group])
        emitted += detok.get_next_delta(finished=stop is not None)
        assert emitted == detok.output_text  # the deltas add up to output_text at every step
        shown.append(emitted)
        if stop is not None:
            break
    if stop is None:
        emitted += detok.get_next_delta(finished=True)
    assert detok.stop_reason == stop
    return shown, emitted, stop


def check(updates: list[list[str]], stops: list[str], include: bool) -> None:
    shown, final, stop = run(updates, stops, include)
    expected_shown, expected_final, expected_stop = reference(["".join(g) for g in updates], stops, include)
    assert (final, stop) == (expected_final, expected_stop)
    assert shown == expected_shown
    assert all(final.startswith(s) for s in shown)  # nothing shown is ever taken back


ALPHABET = "ab\n é😀"  # few characters, so that stop strings do occur, some partially


@st.composite
def split_text(draw, alphabet: str = ALPHABET) -> list[list[str]]:
    """A text cut into tokens (some empty), grouped into updates of one or more tokens."""
    text = draw(st.text(alphabet, max_size=60))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=30)))
    tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    sizes = draw(st.lists(st.integers(1, 4), min_size=len(tokens), max_size=len(tokens)))
    groups, i = [], 0
    for size in sizes:
        if i < len(tokens):
            groups.append(tokens[i : i + size])
            i += size
    return groups


@settings(max_examples=400, deadline=None)
@given(split_text(), st.lists(st.text(ALPHABET, max_size=6), max_size=5), st.booleans())
def test_matches_the_naive_reference(updates, stops, include):
    check(updates, stops, include)


def one_char_tokens(text: str, group: int = 1) -> list[list[str]]:
    return [list(text[i : i + group]) for i in range(0, len(text), group)]


def test_adversarial_stop_lists_match_the_reference():
    a_run = "a" * 600
    cases = [
        (a_run + "b", ["a" * 255 + "b"]),  # a stop string whose prefix matches everywhere, completed at the end
        (a_run, ["a" * 255 + "b", "a" * 254 + "c"]),  # never completed: the last 255 characters stay held
        (a_run + "c", ["a" * i + "b" for i in range(1, 40)] + ["a" * 300 + "c"]),
        ("xabcabcabd", ["abcabd", "cab", "bca"]),  # overlapping: "bca" starts first, "cab" ends first
        ("xxabcd", ["abcd", "bc", "abc"]),  # prefixes of each other: the earliest start wins, then list order
        ("xxabcd", ["bc", "abc", "abcd"]),
        ("one two", ["two", "two", "", "wo"]),  # duplicates and an empty stop string
        ("Привет 👋🏽 мир", ["👋🏽", "🏽 м", "ет"]),  # unicode, a stop string spanning a combining modifier
    ]
    for text, stops in cases:
        for include in (False, True):
            for group in (1, 3, 64):
                check(one_char_tokens(text, group), stops, include)
            check([[text]], stops, include)  # the whole text in one update


def test_work_per_character_is_bounded():
    """Every character is read once, and failure links followed in total are at most the characters read: the
    stop list's size and length never multiply the work per token."""
    stops = ["a" * 255 + "b"] + ["a" * i + "c" for i in range(1, 255)]
    matcher = StopMatcher(stops)
    reads = {"fail": 0}

    class CountingFail(tuple):
        def __getitem__(self, index):
            reads["fail"] += 1
            return super().__getitem__(index)

    matcher._auto = dataclasses.replace(matcher._auto, fail=CountingFail(matcher._auto.fail))
    text = ("a" * 300 + "d") * 20
    for i in range(0, len(text), 3):
        assert matcher.feed(text[i : i + 3]) is None
    assert 0 < reads["fail"] <= len(text)
    assert matcher.partial_len == 0  # "d" resets: nothing held
    assert matcher.feed("a" * 255) is None and matcher.partial_len == 255
    hit = matcher.feed("b")
    assert hit is not None and (hit.start, hit.stop) == (len(text), "a" * 255 + "b")
