"""How long a constrained request holds the engine's thread in Engine.add_request: when the engine compiles the
grammar itself (as the offline LLM does, and the server did) vs. when it is handed the template the server compiled
in a worker thread (server/structured_compile.py). A mid-size JSON schema (an order: 12 properties, two nested
addresses, an array of items, patterns, enums, formats), the embedded model.

    python benchmarks/grammar_compile.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mistralpy import LLM, SamplingParams
from mistralpy.engine.engine import Engine
from mistralpy.structured import StructuredOutputsParams
from mistralpy.structured.compile_cache import GrammarCompiler
from mistralpy.structured.ll_tokenizer import ll_tokenizer
from mistralpy.structured.request_matcher import RequestMatcher
from mistralpy.structured.token_mask import allowed_tokens

T = TypeVar("T")


def order_schema(title: str) -> dict:
    """A new title makes a new grammar (nothing cached)."""
    address = {
        "type": "object",
        "properties": {
            "street": {"type": "string", "maxLength": 40},
            "city": {"type": "string"},
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            "country": {"enum": ["US", "FR", "DE", "JP", "BR"]},
        },
        "required": ["street", "city", "zip"],
        "additionalProperties": False,
    }
    item = {
        "type": "object",
        "properties": {
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "qty": {"type": "integer", "minimum": 1, "maximum": 100},
            "price": {"type": "number", "minimum": 0},
        },
        "required": ["sku", "qty", "price"],
        "additionalProperties": False,
    }
    properties = {
        "id": {"type": "integer", "minimum": 1},
        "name": {"type": "string", "minLength": 1, "maxLength": 60},
        "email": {"type": "string", "format": "email"},
        "created": {"type": "string", "format": "date-time"},
        "status": {"enum": ["new", "paid", "shipped", "cancelled"]},
        "billing": address,
        "shipping": address,
        "items": {"type": "array", "items": item, "minItems": 1, "maxItems": 20},
        "notes": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 5},
        "priority": {"type": "integer", "minimum": 0, "maximum": 5},
        "gift": {"type": "boolean"},
    }
    required = ["id", "name", "status", "billing", "items"]
    return {"title": title, "type": "object", "properties": properties, "required": required,
            "additionalProperties": False}  # fmt: skip


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def fresh_compiler(engine: Engine) -> GrammarCompiler:
    return GrammarCompiler(engine.tokenizer, engine.eos_token_ids, engine.model_config.vocab_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    engine = LLM().engine
    vocab_size = engine.model_config.vocab_size
    _, first = timed(ll_tokenizer, engine.tokenizer, engine.eos_token_ids, vocab_size)
    prompt = engine.tokenizer.encode("Order:")
    results: dict[str, list[float]] = {k: [] for k in ("validate", "compile", "before", "after", "first_mask")}
    for i in range(rounds):
        spec, seconds = timed(StructuredOutputsParams, json=order_schema(f"order {i}"))
        results["validate"].append(seconds)
        params = SamplingParams(max_tokens=1, structured_outputs=spec)
        engine.grammar_compiler = fresh_compiler(engine)
        results["before"].append(timed(engine.add_request, prompt, params, request_id=f"b{i}")[1])
        engine.abort_request(f"b{i}")
        engine.grammar_compiler = fresh_compiler(engine)
        template, seconds = timed(engine.grammar_compiler.template, spec)
        results["compile"].append(seconds)
        results["after"].append(timed(engine.add_request, prompt, params, request_id=f"a{i}", grammar=template)[1])
        engine.abort_request(f"a{i}")
        results["first_mask"].append(timed(allowed_tokens, [RequestMatcher(template.deep_copy())], vocab_size)[1])
    print(f"the model's LLTokenizer, made once (by the first compile): {first * 1000:.0f} ms")
    print(f"grammar: {len(spec.llguidance_grammar)} characters; {rounds} rounds, median (min-max) ms:")
    names = {
        "validate": "StructuredOutputsParams (validation)",
        "compile": "GrammarCompiler.template (compile)",
        "before": "Engine.add_request compiling itself",
        "after": "Engine.add_request given the template",
        "first_mask": "the first mask of a fresh grammar",
    }
    for key, label in names.items():
        xs = [x * 1000 for x in results[key]]
        print(f"  {label:40s} {statistics.median(xs):7.2f} ({min(xs):.2f}-{max(xs):.2f})")


if __name__ == "__main__":
    main()
