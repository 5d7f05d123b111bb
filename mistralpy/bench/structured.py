"""`mistralpy bench --structured`: the decode rate of JSON-schema constrained requests against the same prompts
unconstrained (each request then runs exactly as many tokens as its constrained twin did), at each concurrency.

Decode only: the clock starts once every request has its first token (the prefills are the same work either way)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from ..engine.engine import Engine
from ..sampling_params import SamplingParams
from ..structured import StructuredOutputsParams

# A record with nested fields, as an application would ask for; bounded strings keep greedy outputs finite.
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "maxLength": 32},
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string", "maxLength": 32},
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["street", "city", "zip"],
            "additionalProperties": False,
        },
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
        "employed": {"type": "boolean"},
    },
    "required": ["name", "age", "email", "address", "skills", "employed"],
    "additionalProperties": False,
}
_NAMES = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Gustavo", "Hana"]
_CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromso", "Adelaide", "Montreal", "Krakow"]


@dataclass
class StructuredResult:
    concurrency: int
    tokens: list[int]  # decode tokens timed per repetition (the same for both runs of a repetition)
    constrained_seconds: list[float]
    free_seconds: list[float]

    @property
    def constrained_tok_per_s(self) -> float:
        return statistics.mean(n / s for n, s in zip(self.tokens, self.constrained_seconds, strict=True))

    @property
    def free_tok_per_s(self) -> float:
        return statistics.mean(n / s for n, s in zip(self.tokens, self.free_seconds, strict=True))

    @property
    def ratio(self) -> float:
        """Constrained over unconstrained decode rate: 1.0 is free, 0.9 is a 10% cost."""
        return statistics.mean(f / c for c, f in zip(self.constrained_seconds, self.free_seconds, strict=True))

    def to_dict(self) -> dict:
        return {
            "test": f"json c{self.concurrency}", "concurrency": self.concurrency, "tokens": self.tokens,
            "constrained_seconds": self.constrained_seconds, "free_seconds": self.free_seconds,
            "constrained_tok_per_s": self.constrained_tok_per_s, "free_tok_per_s": self.free_tok_per_s,
            "ratio": self.ratio,
        }  # fmt: skip


def structured_prompts(count: int) -> list[str]:
    return [
        f"Write the record of a person called {_NAMES[i % len(_NAMES)]} who lives in {_CITIES[i // len(_NAMES) % 8]}"
        f" (record {i}) as JSON:"
        for i in range(count)
    ]


def run_structured(engine: Engine, concurrency: list[int], gen_tokens: int, repetitions: int) -> list[StructuredResult]:
    spec = StructuredOutputsParams(json=PERSON_SCHEMA)
    results = []
    for c in concurrency:
        prompts = structured_prompts(c)
        constrained = SamplingParams(temperature=0, max_tokens=gen_tokens, structured_outputs=spec)
        lengths, _, _ = decode(engine, prompts, [constrained] * c)  # warm-up; compiles the grammar
        free = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in lengths]
        decode(engine, prompts, free)
        result = StructuredResult(c, [], [], [])
        for _ in range(repetitions):
            again, tokens, seconds = decode(engine, prompts, [constrained] * c)
            if again != lengths:  # greedy: the same outputs each time, so the free twins match them
                raise RuntimeError(f"greedy constrained outputs changed length between runs: {lengths} -> {again}")
            result.constrained_seconds.append(seconds)
            result.tokens.append(tokens)
            result.free_seconds.append(decode(engine, prompts, free)[2])
        results.append(result)
    return results


def decode(engine: Engine, prompts: list[str], params: list[SamplingParams]) -> tuple[list[int], int, float]:
    """Each request's output length, and the tokens and seconds of the decode once all have their first token."""
    ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
    lengths = dict.fromkeys(ids, 0)
    start, at_start = None, 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            lengths[out.request_id] = len(out.outputs[0].token_ids)
        if start is None and all(lengths.values()):
            start, at_start = time.perf_counter(), sum(lengths.values())
    seconds = time.perf_counter() - start
    return [lengths[i] for i in ids], sum(lengths.values()) - at_start, seconds


def format_structured_table(results: list[StructuredResult]) -> str:
    rows = [("test", "constrained t/s", "unconstrained t/s", "ratio")]
    for r in results:
        rows.append((f"json c{r.concurrency}", f"{r.constrained_tok_per_s:.1f}", f"{r.free_tok_per_s:.1f}",
                     f"{r.ratio:.3f}"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
