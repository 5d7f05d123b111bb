"""The structured-output test cases: JSON schemas, string formats with their oracles, regexes, choices and Lark
grammars with theirs. Every case bounds its output's length (strings, arrays and numbers all have limits), so a
sample at temperature 1 always ends by the grammar, never by the budget. The oracles are the tests' own."""

from __future__ import annotations

import ast
import calendar
import ipaddress
import json
import re
import uuid
from collections.abc import Callable

RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
        "role": {"enum": ["admin", "user", "guest"]},
        "emails": {"type": "array", "items": {"type": "string", "format": "email", "maxLength": 16}, "maxItems": 1},
    },
    "required": ["name", "age", "member", "role", "emails"],
    "additionalProperties": False,
}

_POINT = {
    "type": "object",
    "properties": {
        "x": {"type": "integer", "minimum": -99, "maximum": 99},
        "y": {"type": "integer", "minimum": -9, "maximum": 99},
    },
    "required": ["x"],
    "additionalProperties": False,
}
_ITEM = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "qty": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["sku", "qty"],
    "additionalProperties": False,
}
_ADDRESS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
    "required": ["city", "zip"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict] = {
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 9999}, "address": _ADDRESS},
                "required": ["id", "address"],
                "additionalProperties": False,
            },
            "items": {"type": "array", "items": _ITEM, "maxItems": 3},
        },
        "required": ["user", "items"],
        "additionalProperties": False,
    },
    "array_bounds": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 9},
        "minItems": 2,
        "maxItems": 4,
    },
    "fixed_array": {"type": "array", "items": {"type": "boolean"}, "minItems": 3, "maxItems": 3},
    "prefix_items": {
        "type": "array",
        "prefixItems": [{"type": "string", "maxLength": 4}, {"type": "integer", "minimum": 0, "maximum": 5}],
        "items": False,
        "minItems": 2,
    },
    "enums_mixed": {"enum": ["red", 7, None, True, 'with "quotes"', [1, 2], {"k": "v"}]},
    "any_of": {
        "anyOf": [
            {"type": "integer", "minimum": -5, "maximum": 5},
            {
                "type": "object",
                "properties": {"x": {"type": "boolean"}},
                "required": ["x"],
                "additionalProperties": False,
            },
            {"type": "null"},
        ]
    },
    "ref_defs": {
        "$defs": {"point": _POINT, "line": {"type": "array", "items": {"$ref": "#/$defs/point"}, "maxItems": 2}},
        "type": "object",
        "properties": {
            "from": {"$ref": "#/$defs/point"},
            "to": {"$ref": "#/$defs/point"},
            "via": {"$ref": "#/$defs/line"},
        },
        "required": ["from", "to", "via"],
        "additionalProperties": False,
    },
    "string_patterns": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z][a-z]{1,4}-[0-9]{2}$"},
            "hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
            "word": {"type": "string", "minLength": 2, "maxLength": 5},
        },
        "required": ["code", "hex", "word"],
        "additionalProperties": False,
    },
    "integer_bounds": {
        "type": "array",
        "prefixItems": [
            {"type": "integer", "minimum": -3, "maximum": 3},
            {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 13},
            {"type": "integer", "minimum": 100, "maximum": 100},
            {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 50},
        ],
        "items": False,
        "minItems": 4,
    },
    # numbers with a bounded range, their digits bounded by multipleOf (without it, the fraction has no end)
    "number_bounds": {
        "type": "array",
        "prefixItems": [
            {"type": "number", "minimum": -1.5, "maximum": 2.5, "multipleOf": 0.5},
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.125},
        ],
        "items": False,
        "minItems": 2,
    },
    "required_and_optional": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 9},
            "b": {"type": "string", "maxLength": 4},
            "c": {"type": "boolean"},
        },
        "required": ["b"],
        "additionalProperties": False,
    },
    "const": {
        "type": "object",
        "properties": {"version": {"const": 2}, "kind": {"const": "point"}, "ok": {"type": "boolean"}},
        "required": ["version", "kind", "ok"],
        "additionalProperties": False,
    },
    "type_list": {"type": ["integer", "boolean", "null"], "minimum": 0, "maximum": 99},
}

_DATE = r"(\d{4})-(\d{2})-(\d{2})"
_TIME = r"(\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))"


def _date_ok(year: str, month: str, day: str) -> bool:
    # calendar.isleap follows the proleptic Gregorian rules for any year, 0000 (a leap year) included
    days = [31, 29 if calendar.isleap(int(year)) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return 1 <= int(month) <= 12 and 1 <= int(day) <= days[int(month) - 1]


def _time_ok(hour, minute, second, _frac, _zone, off_hour, off_minute) -> bool:
    offset_ok = off_hour is None or (int(off_hour) <= 23 and int(off_minute) <= 59)
    return int(hour) <= 23 and int(minute) <= 59 and int(second) <= 60 and offset_ok  # 60: a leap second


def rfc3339_date(s: str) -> bool:
    m = re.fullmatch(_DATE, s)
    return m is not None and _date_ok(*m.groups())


def rfc3339_time(s: str) -> bool:
    m = re.fullmatch(_TIME, s)
    return m is not None and _time_ok(*m.groups())


def rfc3339_date_time(s: str) -> bool:
    m = re.fullmatch(_DATE + "[Tt]" + _TIME, s)
    return m is not None and _date_ok(*m.groups()[:3]) and _time_ok(*m.groups()[3:])


def _parses(parse: Callable[[str], object]) -> Callable[[str], bool]:
    def check(s: str) -> bool:
        try:
            parse(s)
        except ValueError:
            return False
        return True

    return check


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
FORMAT_ORACLES: dict[str, Callable[[str], bool]] = {
    "date": rfc3339_date,
    "time": rfc3339_time,
    "date-time": rfc3339_date_time,
    "ipv4": _parses(ipaddress.IPv4Address),
    "ipv6": _parses(ipaddress.IPv6Address),
    "uuid": _parses(uuid.UUID),
    "email": lambda s: re.fullmatch(r"[^@\s]+@[^@\s]+", s) is not None,
    "hostname": lambda s: len(s) <= 253 and re.fullmatch(rf"{_LABEL}(\.{_LABEL})*", s) is not None,
}

REGEXES = [
    r"[a-z]{3}(-[0-9]{2}){1,3}",
    r"(true|false|maybe)",
    r"\d{4}-\d{2}-\d{2}",
    r"[A-Z][a-z]{1,6} [A-Z][a-z]{1,6}",
    r"(0|[1-9][0-9]{0,3})\.[0-9]{2}",
    r"é{1,3}[ü😀]",
]

CHOICES = {
    "plain": ["yes", "no"],
    "prefixes": ["a", "ab", "abc"],  # prefixes of one another: each must still come whole
    "special": ["naïve", 'with "quote"', "new\nline", "😀", "tab\there", "back\\slash", "日本語"],
}


def _arithmetic(text: str) -> bool:
    """Python's parser as the oracle: an expression of integers, + - * and parentheses only."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    allowed = (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult)
    return all(isinstance(node, allowed) for node in ast.walk(tree))


def _inline_json(text: str) -> bool:
    if not text.startswith("Answer: "):
        return False
    value = json.loads(text[len("Answer: ") :])
    return isinstance(value, dict) and set(value) == {"n"} and type(value["n"]) is int and 0 <= value["n"] <= 9


# a user's Lark grammar keeps llguidance's defaults: its inline schema asks for compact whitespace itself
_DIGIT_OBJECT = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["n"],
    "additionalProperties": False,
    "x-guidance": {"whitespace_flexible": False},
}
_KV = r"[a-z]{1,5}=([0-9]{1,3}|on|off)"
LARK: dict[str, tuple[str, Callable[[str], bool]]] = {
    # nesting bounded by the rules themselves (two levels of parentheses)
    "arithmetic": (
        'start: expr\nexpr: term (OP term){0,3}\nterm: NUM | "(" inner ")"\ninner: atom (OP atom){0,2}\n'
        'atom: NUM | "(" NUM OP NUM ")"\nOP: "+" | "-" | "*"\nNUM: /[1-9][0-9]{0,2}/',
        _arithmetic,
    ),
    "list": (
        'start: "[" item ("," item){0,4} "]"\nitem: /[a-z]{1,4}/ | /[0-9]{1,3}/',
        lambda t: re.fullmatch(r"\[([a-z]{1,4}|[0-9]{1,3})(,([a-z]{1,4}|[0-9]{1,3})){0,4}\]", t) is not None,
    ),
    "inline_json": (
        'start: "Answer: " obj\nobj: %json ' + json.dumps(_DIGIT_OBJECT),
        _inline_json,
    ),
    "key_values": (
        'start: pair (";" pair){0,2}\npair: KEY "=" VALUE\nKEY: /[a-z]{1,5}/\nVALUE: /[0-9]{1,3}/ | "on" | "off"',
        lambda t: re.fullmatch(rf"{_KV}(;{_KV}){{0,2}}", t) is not None,
    ),
}
