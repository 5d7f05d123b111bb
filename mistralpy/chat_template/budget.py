"""RenderBudget: what one chat-template render may make and spend, so that no template can exhaust the process.

A chat prompt is its inputs (messages, tools...) laid out with some markup: a few times their size, made in a few
passes. A template asking for much more (`'a' * 10**10`, `10 ** (10 ** 9)`, a loop over a loop...) is refused with
`TemplateBoundError` before it allocates, long before it could take the process down:
- one value (a string, list or dict it makes) holds at most `value_limit` characters or items;
- all the values it makes, the text it writes and its loop iterations and calls (each counted as `STEP_COST`
  characters, `MACRO_COST` for a macro) add up to at most `WORK_FACTOR` value limits;
- an integer it makes has at most `MAX_INT_BITS` bits;
- it finishes within `TIME_LIMIT_S` (a backstop for work no hook sees, such as comparisons inside a loop).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Undefined
from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace

VALUE_LIMIT = 1 << 20  # characters or items of one value, beyond twice the size of the render's inputs
WORK_FACTOR = 64
STEP_COST = 256  # a loop iteration or a call: about a microsecond of interpreter work, against a nanosecond a character
MACRO_COST = 4096  # a macro call sets up a whole new scope
MAX_INT_BITS = 1 << 16  # 19,729 decimal digits: str() of an int stops at 4,300 anyway
TIME_LIMIT_S = 5.0
_OTHER_TEXT = 128  # characters str() gives at most for any other object (a macro, a loop, a range...)


class TemplateBoundError(SecurityError):
    """A template asked for more memory or work than a chat prompt can need."""


@dataclass
class RenderBudget:
    value_limit: int
    work_left: int
    deadline: float = field(default_factory=lambda: time.monotonic() + TIME_LIMIT_S)

    @classmethod
    def for_inputs(cls, inputs: Any) -> RenderBudget:
        limit = VALUE_LIMIT + 2 * text_size(inputs)
        return cls(limit, WORK_FACTOR * limit)

    @classmethod
    def for_compiling(cls, source: str) -> RenderBudget:
        """Jinja computes constant expressions as it compiles, into the compiled code: one value limit in all."""
        limit = VALUE_LIMIT + 2 * len(source)
        return cls(limit, limit)

    def check(self, size: int, what: str) -> None:
        if size > self.value_limit:
            raise TemplateBoundError(
                f"{what} would hold {size:,} characters or items; a chat template may make {self.value_limit:,}"
            )

    def charge(self, units: int) -> None:
        self.work_left -= units
        if self.work_left < 0:
            raise TemplateBoundError("the chat template made far more text or looped far longer than a prompt needs")
        if time.monotonic() > self.deadline:
            raise TemplateBoundError(f"the chat template ran for more than {TIME_LIMIT_S:g} s")


_active: ContextVar[RenderBudget | None] = ContextVar("mistralpy_template_budget", default=None)


def current() -> RenderBudget:
    """The running render's budget; outside a render (Jinja folds constants when it compiles) a fresh one."""
    return _active.get() or RenderBudget(VALUE_LIMIT, WORK_FACTOR * VALUE_LIMIT)


@contextlib.contextmanager
def rendering(budget: RenderBudget) -> Iterator[RenderBudget]:
    token = _active.set(budget)
    try:
        yield budget
    finally:
        _active.reset(token)


def made(value: Any, what: str) -> Any:
    """Check and charge a value a template made (or fetched: a reference costs as much, which errs on the safe
    side); returns it."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateBoundError(f"{what} would be an integer of {value.bit_length():,} bits")
    budget = current()
    size = shallow_size(value)
    budget.check(size, what)
    budget.charge(size)
    return value


def shallow_size(value: Any) -> int:
    """Characters of a string, items of a container, 1 for anything else (an iterator is paid as it is read)."""
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset, range)):
        return len(value)
    return 1


def text_size(value: Any, limit: float = float("inf"), indent: int = 0) -> int:
    """An upper bound on the characters `str(value)` (or its JSON, indented by `indent`) takes, escapes aside (they
    at most multiply it by a small constant). Counting stops once past `limit`, and a container met again is not
    walked again, so a list holding one long string a million times, or one nesting itself twice at every level,
    costs next to nothing to measure."""
    total, seen = 0, {}
    stack: list[tuple[Iterator[Any], int, int, int]] = [(iter((value,)), 0, 0, 0)]  # items, depth, id, total before
    while stack and total <= limit:
        items, depth, key, before = stack[-1]
        item = next(items, _END)
        if isinstance(item, Namespace):  # its str() shows its attributes
            item = item._Namespace__attrs  # type: ignore[attr-defined]
        if item is _END:
            stack.pop()
            seen[key] = total - before
        elif id(item) in seen:
            total += seen[id(item)]
        elif isinstance(item, (dict, list, tuple, set, frozenset, _KeysView, _ValuesView, _ItemsView)):
            per_item = (4 if isinstance(item, dict) else 2) + indent * (depth + 1)
            stack.append((_parts(item), depth + 1, id(item), total))
            total += 2 + len(item) * per_item
        else:
            total += _leaf_size(item)
    return total


_END = object()
_KeysView, _ValuesView, _ItemsView = type({}.keys()), type({}.values()), type({}.items())


def _parts(container: Any) -> Iterator[Any]:
    return itertools.chain.from_iterable(container.items()) if isinstance(container, dict) else iter(container)


def _leaf_size(item: Any) -> int:
    if isinstance(item, (str, bytes)):
        return len(item) + 3
    if isinstance(item, bool) or item is None:
        return 5
    if isinstance(item, int):
        return item.bit_length() // 3 + 2
    if isinstance(item, float):
        return 24
    return 0 if isinstance(item, Undefined) else _OTHER_TEXT
