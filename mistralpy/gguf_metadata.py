"""Typed reads of GGUF metadata (and of the metadata a legacy GGML file is read as): each value the loader uses is
checked against the type and range it needs, and a bad one is a one-line ModelLoadError naming the key."""

from __future__ import annotations

import math
from typing import Any

from .errors import ModelLoadError

MAX_SIZE = 1 << 24  # hidden size, heads, vocabulary...: far above any model's, far below what overflows a tensor's size


def describe(value: Any) -> str:
    """A short rendering of a value for an error message."""
    if isinstance(value, list):
        return f"an array of {len(value)} values"
    text = repr(value)
    return text if len(text) <= 66 else f"{text[:63]}..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(key: str, value: Any, low: int = 0, high: int = MAX_SIZE) -> int:
    if not _is_int(value):
        raise ModelLoadError(f"GGUF metadata {key} must be an integer, not {describe(value)}")
    if not low <= value <= high:
        raise ModelLoadError(f"GGUF metadata {key} is {value}; expected {low} to {high}")
    return value


def get_int(metadata: dict[str, Any], key: str, default: int | None = None, low: int = 0, high: int = MAX_SIZE):
    value = metadata.get(key)
    return default if value is None else check_int(key, value, low, high)


def get_float(metadata: dict[str, Any], key: str, default: float | None = None, positive: bool = False) -> float | None:
    """A finite number (an integer type is accepted); `positive`: above 0, else at least 0."""
    value = metadata.get(key)
    if value is None:
        return default
    if not _is_number(value) or not math.isfinite(value):
        raise ModelLoadError(f"GGUF metadata {key} must be a finite number, not {describe(value)}")
    if value < 0 or (positive and value == 0):
        raise ModelLoadError(
            f"GGUF metadata {key} is {value}; expected a {'positive' if positive else 'non-negative'} number"
        )
    return float(value)


def get_str(metadata: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = metadata.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ModelLoadError(f"GGUF metadata {key} must be a string, not {describe(value)}")
    return value


def get_bool(metadata: dict[str, Any], key: str, default: bool | None) -> bool | None:
    value = metadata.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ModelLoadError(f"GGUF metadata {key} must be a bool, not {describe(value)}")
    return value


def get_list(metadata: dict[str, Any], key: str, kind: str, length: int | None = None) -> list | None:
    """An array whose values are all of `kind` ("int", "number" or "str"), of `length` values if given."""
    value = metadata.get(key)
    if value is None:
        return None
    check = {"int": _is_int, "number": _is_number, "str": lambda v: isinstance(v, str)}[kind]
    if not isinstance(value, list) or not all(check(v) for v in value):
        raise ModelLoadError(f"GGUF metadata {key} must be an array of {kind} values, not {describe(value)}")
    if length is not None and len(value) != length:
        raise ModelLoadError(f"GGUF metadata {key} has {len(value)} values; expected {length}")
    return value


def get_per_layer(metadata: dict[str, Any], key: str, default: int | None = None, low: int = 1) -> int | list[int]:
    """An integer, or one per layer (some families store a list): each in [low, MAX_SIZE]."""
    value = metadata.get(key)
    if value is None:
        if default is None:
            raise ModelLoadError(f"no metadata key {key}")
        return default
    if isinstance(value, list):
        if not value:
            raise ModelLoadError(f"GGUF metadata {key} is an empty array")
        return [check_int(f"{key}[{i}]", v, low) for i, v in enumerate(value)]
    return check_int(key, value, low)
