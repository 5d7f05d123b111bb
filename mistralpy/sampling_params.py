"""SamplingParams: vLLM's names and defaults, validated once at construction with clear errors."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import InvalidRequestError
from .structured.params import StructuredOutputsParams

MAX_LOGPROBS = 20
MAX_LOGIT_BIAS = 100.0
# torch.Generator.manual_seed accepts exactly this range; checking here keeps the failure at the request edge.
_SEED_RANGE = (-(2**63), 2**64 - 1)


def _fail(name: str, value: Any, rule: str) -> NoReturn:
    raise InvalidRequestError(f"Invalid sampling parameter {name}: {rule}, got {value!r}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `top_k=True` is a client bug, not a 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value: Any, ok: Callable[[int], bool], rule: str) -> int:
    if not _is_int(value):
        _fail(name, value, "must be an integer")
    if not ok(int(value)):
        _fail(name, value, rule)
    return int(value)


def _check_float(name: str, value: Any, ok: Callable[[float], bool], rule: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(name, value, "must be a number")
    if not math.isfinite(float(value)):
        _fail(name, value, "must be finite")
    if not ok(float(value)):
        _fail(name, value, rule)
    return float(value)


def _check_optional_int(name: str, value: Any, ok: Callable[[int], bool], rule: str) -> int | None:
    return None if value is None else _check_int(name, value, ok, rule)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(name, value, "must be true or false")
    return value


def _normalise_stop(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
        _fail("stop", value, "must be a string or a list of strings")
    if any(s == "" for s in items):
        _fail("stop", value, "must not contain an empty string")
    return list(items)


def _normalise_stop_token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(_is_int(t) and t >= 0 for t in value):
        _fail("stop_token_ids", value, "must be a list of non-negative integers")
    return [int(t) for t in value]


def _bias_key(key: Any, bias: Any) -> int:
    # JSON object keys are always strings, so "50256" must mean token 50256.
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key)
    if _is_int(key) and key >= 0:
        return int(key)
    _fail("logit_bias", bias, f"keys must be non-negative token ids, found key {key!r}")


def _normalise_logit_bias(value: Any) -> dict[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _fail("logit_bias", value, "must be a mapping of token id to bias")
    out: dict[int, float] = {}
    for key, bias in value.items():
        token = _bias_key(key, value)
        if isinstance(bias, bool) or not isinstance(bias, numbers.Real) or not math.isfinite(float(bias)):
            _fail("logit_bias", value, f"value for token {key!r} must be a finite number")
        if not -MAX_LOGIT_BIAS <= float(bias) <= MAX_LOGIT_BIAS:
            _fail("logit_bias", value, f"value for token {key!r} must be in [-100, 100]")
        out[token] = float(bias)
    return out


@dataclass
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 = off
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None  # normalised to list[str]
    stop_token_ids: list[int] | None = None  # normalised to list[int]
    ignore_eos: bool = False
    max_tokens: int | None = 16  # None = up to the context length
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    structured_outputs: StructuredOutputsParams | None = None  # a dict is taken as its fields

    def __post_init__(self) -> None:
        self._validate_counts()
        self._validate_distribution()
        self._validate_penalties()
        self.stop = _normalise_stop(self.stop)
        self.stop_token_ids = _normalise_stop_token_ids(self.stop_token_ids)
        self.logit_bias = _normalise_logit_bias(self.logit_bias)
        self.ignore_eos = _check_bool("ignore_eos", self.ignore_eos)
        self.skip_special_tokens = _check_bool("skip_special_tokens", self.skip_special_tokens)
        self.include_stop_str_in_output = _check_bool("include_stop_str_in_output", self.include_stop_str_in_output)
        self._validate_structured_outputs()

    def _validate_counts(self) -> None:
        self.n = _check_int("n", self.n, lambda v: v >= 1, "must be at least 1")
        self.max_tokens = _check_optional_int("max_tokens", self.max_tokens, lambda v: v >= 1, "must be at least 1")
        self.min_tokens = _check_int("min_tokens", self.min_tokens, lambda v: v >= 0, "must be non-negative")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            _fail("min_tokens", self.min_tokens, f"must not exceed max_tokens ({self.max_tokens})")
        in_range = f"must be in [0, {MAX_LOGPROBS}]"
        self.logprobs = _check_optional_int("logprobs", self.logprobs, lambda v: 0 <= v <= MAX_LOGPROBS, in_range)
        self.prompt_logprobs = _check_optional_int(
            "prompt_logprobs", self.prompt_logprobs, lambda v: 0 <= v <= MAX_LOGPROBS, in_range
        )
        lo, hi = _SEED_RANGE
        self.seed = _check_optional_int("seed", self.seed, lambda v: lo <= v <= hi, "must fit in 64 bits")

    def _validate_distribution(self) -> None:
        self.temperature = _check_float("temperature", self.temperature, lambda v: v >= 0, "must be non-negative")
        self.top_p = _check_float("top_p", self.top_p, lambda v: 0 < v <= 1, "must be in (0, 1]")
        self.top_k = _check_int("top_k", self.top_k, lambda v: v >= -1, "must be -1 or 0 (off) or a positive integer")
        self.min_p = _check_float("min_p", self.min_p, lambda v: 0 <= v <= 1, "must be in [0, 1]")

    def _validate_penalties(self) -> None:
        in_range = "must be in [-2, 2]"
        self.presence_penalty = _check_float(
            "presence_penalty", self.presence_penalty, lambda v: -2 <= v <= 2, in_range
        )
        self.frequency_penalty = _check_float(
            "frequency_penalty", self.frequency_penalty, lambda v: -2 <= v <= 2, in_range
        )
        self.repetition_penalty = _check_float(
            "repetition_penalty", self.repetition_penalty, lambda v: v > 0, "must be positive"
        )

    def _validate_structured_outputs(self) -> None:
        spec = self.structured_outputs
        if spec is None:
            return
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - set(StructuredOutputsParams.__dataclass_fields__))
            if unknown:
                _fail("structured_outputs", spec, f"unknown fields {unknown}")
            spec = self.structured_outputs = StructuredOutputsParams(**spec)
        if not isinstance(spec, StructuredOutputsParams):
            _fail("structured_outputs", spec, "must be a StructuredOutputsParams or a mapping of its fields")
        # the grammar decides where the output ends: an EOS it asks for must end it, and may not be banned
        if self.ignore_eos:
            _fail("ignore_eos", True, "is not supported with structured_outputs")
        if self.min_tokens:
            _fail("min_tokens", self.min_tokens, "is not supported with structured_outputs")

    def verify_vocab(self, vocab_size: int) -> None:
        """Token ids can only be checked once the model is known; the engine calls this when admitting a request."""
        for name, ids in (("logit_bias", list(self.logit_bias or ())), ("stop_token_ids", self.stop_token_ids)):
            bad = [t for t in ids or () if t >= vocab_size]
            if bad:
                _fail(name, bad, f"token ids must be below the vocabulary size {vocab_size}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0
