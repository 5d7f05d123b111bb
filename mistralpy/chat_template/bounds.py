"""The size checks of a template's operations (filters, operators, str methods, formatting) against its RenderBudget.

Every result is checked and charged (`made`). An operation that turns a value into text first checks the text it can
take, and one that takes a size (a width, a count, a repeat, an exponent) checks what that size asks for before it
runs: `'a' * 10**10` and `'a'|center(10**10)` are refused, not attempted.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Mapping, Sized
from typing import Any

from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

from .budget import MAX_INT_BITS, TemplateBoundError, current, made, shallow_size, text_size

Check = Callable[..., Any]  # (value, *filter args, **filter kwargs) -> the value to pass on

_SPEC = re.compile(r"[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.?)", re.S)
_PER_FIELD = 32  # characters a printf field may add beyond its width, precision and argument's text
_FLOAT_DIGITS = 310  # '%f' of 1e308


def printf_size(fmt: str, args: Any, limit: int) -> int:
    """An upper bound on len(fmt % args), read off the format like Python reads it (keys, '*' widths...)."""
    mapping = args if isinstance(args, Mapping) else None
    positional = list(args) if isinstance(args, tuple) else [args]
    total, i, used = len(fmt), 0, 0
    while (i := fmt.find("%", i)) >= 0 and total <= limit:
        key, i = None, i + 1
        if fmt.startswith("(", i):  # a mapping key, parentheses nested
            depth, j = 1, i + 1
            while j < len(fmt) and depth:
                depth += {"(": 1, ")": -1}.get(fmt[j], 0)
                j += 1
            key, i = fmt[i + 1 : j - 1], j
        spec = _SPEC.match(fmt, i)
        i = spec.end()
        sizes = []
        for part in spec.group(1, 2):
            if part == "*":
                star = positional[used] if used < len(positional) else 0
                sizes.append(abs(star) if isinstance(star, int) else 0)
                used += 1
            else:
                sizes.append(int(part) if part else 0)
        if spec.group(3) == "%":
            arg = None
        elif key is not None:
            arg = mapping.get(key) if mapping is not None else None
        else:
            arg = positional[used] if used < len(positional) else None
            used += 1
        digits = _FLOAT_DIGITS if isinstance(arg, float) else 0
        total += sum(sizes) + text_size(arg, limit) + digits + _PER_FIELD
    return total


def check_printf(fmt: Any, args: Any) -> None:
    if isinstance(fmt, str):
        limit = current().value_limit
        current().check(printf_size(fmt, args, limit), "a '%' format")


def _text(value: Any, *args: Any, **kwargs: Any) -> Any:
    current().check(text_size(value, current().value_limit), "the text of a filter's value")
    return value


def _width(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> Any:
    _text(value)
    if isinstance(width, int):
        current().check(width, "a filter's width")
    return value


def _indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> Any:
    _text(value)
    prefix = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    lines = str(value).count("\n") + 1
    current().check(len(str(value)) + lines * prefix, "indent's result")
    return value


def _wordwrap(value: Any, width: Any = 79, long_words: Any = True, wrapstring: Any = None, *a: Any, **kw: Any) -> Any:
    _text(value)
    text, wrap = str(value), len(wrapstring) if isinstance(wrapstring, str) else 1
    current().check(len(text) + (len(text) + 1) * wrap, "wordwrap's result")  # a break at most per character
    return value


def _replace(value: Any, old: Any, new: Any, count: Any = None) -> Any:
    _text(value)
    check_replace(str(value), old, new, count)
    return value


def check_replace(text: str | bytes, old: Any, new: Any, count: Any) -> None:
    if isinstance(old, type(text)) and isinstance(new, type(text)):
        hits = len(text) + 1 if not old else text.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        current().check(len(text) + hits * max(0, len(new) - len(old)), "replace's result")


def _join(value: Any, d: Any = "", attribute: Any = None) -> Any:
    items = list(value) if not isinstance(value, Sized) else value
    limit = current().value_limit
    size = text_size(items, limit) + len(items) * (len(d) if isinstance(d, str) else 0)
    current().check(size, "join's result")
    return items


def _format(value: Any, *args: Any, **kwargs: Any) -> Any:
    check_printf(str(value), kwargs or args)
    return value


def _count(value: Any, count: Any = None, *args: Any, **kwargs: Any) -> Any:
    count = kwargs.get("linecount", kwargs.get("slices", count))  # batch's and slice's names for it
    if isinstance(count, int):
        current().check(count, "batch's or slice's count")
    return value


def _sum(value: Any, attribute: Any = None, start: Any = 0) -> Any:
    items = list(value) if not isinstance(value, Sized) else value
    if not isinstance(start, (int, float)):  # concatenation: each step copies what it has so far
        current().charge(len(items) * sum(shallow_size(item) for item in items))
    return items


def _sorting(value: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(value, Sized):
        current().charge(len(value) * max(1, len(value).bit_length()))
    return value


def _tojson(value: Any, ensure_ascii: Any = False, indent: Any = None, *args: Any, **kwargs: Any) -> Any:
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    current().check(text_size(value, current().value_limit, indent=width), "tojson's result")
    return value


def _pprint(value: Any) -> Any:
    current().check(text_size(value, current().value_limit, indent=1), "pprint's result")
    return value


CHECKS: dict[str, Check] = {
    "center": _width, "indent": _indent, "wordwrap": _wordwrap, "replace": _replace, "join": _join,
    "format": _format, "batch": _count, "slice": _count, "sum": _sum, "tojson": _tojson, "pprint": _pprint,
    "sort": _sorting, "unique": _sorting, "dictsort": _sorting, "groupby": _sorting, "min": _sorting,
    "max": _sorting, **dict.fromkeys(
        ("capitalize", "e", "escape", "forceescape", "lower", "upper", "title", "trim", "truncate", "wordcount",
         "string", "striptags", "urlize", "urlencode", "safe", "xmlattr", "list", "reverse"), _text),
}  # fmt: skip


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a filter, possibly taking Jinja's context, eval context or environment first) within the budget."""
    check = CHECKS.get(name)
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes what it passed to `func`
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if check is not None and len(args) > skip:
            value = check(*args[skip:], **kwargs)
            args = (*args[:skip], value, *args[skip + 1 :])
        return made(func(*args, **kwargs), f"the {name} filter's result")

    return bounded


def bounded_lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(lipsum)
    def bounded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
        if not all(isinstance(v, int) for v in (n, min, max)):
            raise TypeError("lipsum takes integer n, min and max")
        current().check(n * max * 16, "lipsum's text")
        return made(lipsum(n, html, min, max), "lipsum's text")

    return bounded


_SEQUENCES = (str, bytes, list, tuple)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `*`, `+`, `**` and `%` whose result would pass the bounds, before computing it."""
    if operator == "*":
        count, seq = (left, right) if isinstance(left, int) else (right, left)
        if isinstance(count, int) and isinstance(seq, int) and count.bit_length() + seq.bit_length() > MAX_INT_BITS:
            raise TemplateBoundError(
                f"'*' would make an integer of about {count.bit_length() + seq.bit_length():,} bits"
            )
        if isinstance(count, int) and isinstance(seq, _SEQUENCES):
            current().check(shallow_size(seq) * max(count, 0), "a '*' result")
    elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        current().check(shallow_size(left) + shallow_size(right), "a '+' result")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        bits = (abs(left).bit_length() - 1) * right
        if bits > MAX_INT_BITS:
            raise TemplateBoundError(f"'**' would make an integer of more than {bits:,} bits")
    elif operator == "%":
        check_printf(left, args=right)


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def check_str_method(method: Any, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """Check a call of a str (or bytes) method that takes a size; returns the arguments to call it with."""
    text = getattr(method, "__self__", None)
    if not isinstance(method, types.BuiltinMethodType) or not isinstance(text, (str, bytes)):
        return args
    name, budget = method.__name__, current()
    if name in _WIDTH_METHODS and args and isinstance(args[0], int):
        budget.check(args[0], f"{name}'s width")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        tabs = text.count("\t" if isinstance(text, str) else b"\t")
        budget.check(len(text) + tabs * (size if isinstance(size, int) else 0), "expandtabs's result")
    elif name == "replace" and len(args) >= 2:
        check_replace(text, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
    elif name == "join" and args:
        items = list(args[0])
        parts = sum(len(item) if isinstance(item, (str, bytes)) else 0 for item in items)
        budget.check(parts + len(text) * max(0, len(items) - 1), "join's result")
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) if isinstance(v, (str, bytes)) else 1 for v in args[0].values()), default=1)
        budget.check(len(text) * longest, "translate's result")
    return args


class BoundedFormatter(SandboxedFormatter):
    """str.format within the budget: each field's width and precision are checked before it is formatted."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = current()
        asked = sum(int(digits) for digits in re.findall(r"\d+", format_spec))
        budget.check(text_size(value, budget.value_limit) + asked, "a str.format field")
        return made(super().format_field(value, format_spec), "a str.format field")


class BoundedEscapeFormatter(BoundedFormatter, SandboxedEscapeFormatter):
    """The same for Markup.format, which escapes its fields."""
