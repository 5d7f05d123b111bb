"""GBNF (llama.cpp's grammar format) -> llguidance's Lark, by llguidance's own converter; Lark passes through."""

from __future__ import annotations

import re

from llguidance.gbnf_to_lark import gbnf_to_lark

# A GBNF rule is `name ::= ...`; Lark writes `name: ...`, so `::=` at a rule's head tells the two apart. llama.cpp
# itself hands a grammar starting with `%llguidance` to llguidance as Lark.
_GBNF_RULE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9_-]*\s*::=", re.MULTILINE)
_LLGUIDANCE_LARK = re.compile(r"^\s*%llguidance\b")


def is_gbnf(text: str) -> bool:
    return not _LLGUIDANCE_LARK.match(text) and _GBNF_RULE.search(text) is not None


def lark_of(text: str) -> str:
    """The grammar as llguidance's Lark: GBNF converted, anything else as it is. ValueError with the converter's
    message when the GBNF does not convert."""
    if not is_gbnf(text):
        return text
    try:
        return gbnf_to_lark(text)
    except Exception as e:  # the converter raises bare Exceptions (an undefined rule) as well as its own
        raise ValueError(f"GBNF: {e}") from None
