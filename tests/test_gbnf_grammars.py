"""llama.cpp's own GBNF grammars (tests/data/gbnf, converted by llguidance's converter) constrain sampled outputs of
the tiny random Llama: every output is checked by a parser written here (json.loads, re.fullmatch, a naive
recognizer of arithmetic.gbnf's language); one the budget ends must be a viable prefix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.structured import StructuredOutputsParams

GBNF = Path(__file__).parent / "data" / "gbnf"


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return LLM(str(tiny_llama[1]), dtype="float32")


def _outputs(llm: LLM, name: str, closers: str, n: int = 8, max_tokens: int = 40):
    """`closers`: characters (and EOS) made likelier, so the random model closes what it opens and ends where the
    grammar lets it; the mask still decides where each is allowed."""
    spec = StructuredOutputsParams(grammar=(GBNF / name).read_text())
    tokenizer = llm.get_tokenizer()
    ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in closers] + sorted(llm.engine.eos_token_ids)
    bias = {i: 6.0 for i in ids}
    params = SamplingParams(
        n=n, temperature=1.0, seed=7, max_tokens=max_tokens, structured_outputs=spec, logit_bias=bias
    )
    return llm.generate(["Here:"], params)[0].outputs


def _arithmetic_ends(s: str, start: int) -> tuple[set[int], bool]:
    """arithmetic.gbnf's language, naively: the positions where `root` can end, and whether some derivation runs
    into the end of s (s is then a viable prefix). Every rule is a function from a position to its end positions."""
    n, viable = len(s), [False]

    def chars(ps: set[int], allowed: str, least: int, most: float) -> set[int]:
        out = set()
        for p in ps:
            count = 0
            while True:
                if count >= least:
                    out.add(p)
                if count == most:
                    break
                if p == n:
                    viable[0] = True
                    break
                if s[p] not in allowed:
                    break
                p, count = p + 1, count + 1
        return out

    lower, digits = "abcdefghijklmnopqrstuvwxyz", "0123456789"
    ws = lambda ps: chars(ps, " \t\n", 0, float("inf"))  # noqa: E731
    lit = lambda ps, c: chars(ps, c, 1, 1)  # noqa: E731

    def term(ps: set[int]) -> set[int]:
        ident = ws(chars(lit(ps, lower), lower + digits + "_", 0, float("inf")))
        num = ws(chars(ps, digits, 1, float("inf")))
        group = ws(lit(expr(ws(lit(ps, "("))), ")")) if ps else set()
        return ident | num | group

    def expr(ps: set[int]) -> set[int]:
        ends = frontier = term(ps)
        while frontier:
            frontier = term(lit(frontier, "-+*/")) - ends
            ends = ends | frontier
        return ends

    ends, frontier = set(), {start}
    while frontier:
        frontier = lit(term(ws(lit(expr(frontier), "="))), "\n") - ends
        ends |= frontier
    return ends, viable[0]


def test_the_naive_arithmetic_recognizer():
    for good in ("(y+2)*3 = x\n", "a=b\n\n", "(a)=1\nb*c = 2\n"):
        assert len(good) in _arithmetic_ends(good, 0)[0], good
    for bad in ("x = \n", "=1\n", "a=b", "x = (y+2)*3\n"):  # the right side is one term
        assert len(bad) not in _arithmetic_ends(bad, 0)[0], bad
    assert _arithmetic_ends("a=(b", 0)[1] and not _arithmetic_ends("a=)", 0)[1]


def test_json_gbnf(tiny):
    outputs = _outputs(tiny, "json.gbnf", '"}]')
    for out in outputs:
        if out.finish_reason == "stop":
            assert isinstance(json.loads(out.text), dict), out.text
        else:
            assert out.text.startswith("{"), out.text
    assert any(out.finish_reason == "stop" for out in outputs)


def test_list_gbnf(tiny):
    item = "- [^\r\n\x0b\x0c\x85\u2028\u2029]+\n"
    outputs = _outputs(tiny, "list.gbnf", "\n")
    assert any(out.finish_reason == "stop" for out in outputs)
    for out in outputs:
        if out.finish_reason == "stop":
            assert re.fullmatch(f"({item})+", out.text), out.text
        else:  # whole items, then part of one
            assert re.fullmatch(f"({item})*(-( [^\r\n\x0b\x0c\x85\u2028\u2029]*)?)?", out.text), out.text


def test_arithmetic_gbnf(tiny):
    # the random model's identifiers run on ([a-z0-9_]* takes most of its vocabulary): mostly viable prefixes
    for out in _outputs(tiny, "arithmetic.gbnf", "=)\n"):
        ends, viable = _arithmetic_ends(out.text, 0)
        assert len(out.text) in ends if out.finish_reason == "stop" else viable, out.text
