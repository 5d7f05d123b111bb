"""Time every test on every backend (with a warm-up and repetitions) and report a table or JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass

from tqdm import tqdm

from .backends import Backend
from .workloads import Test, random_prompts


@dataclass
class Result:
    backend: str
    dtype: str
    test: str
    kind: str
    prompt_tokens: int
    gen_tokens: int
    concurrency: int
    seconds: list[float]

    @property
    def tokens(self) -> int:
        return Test(self.kind, self.prompt_tokens, self.gen_tokens, self.concurrency).counted_tokens

    @property
    def tok_per_s(self) -> float:
        return statistics.mean(self.tokens / s for s in self.seconds)

    @property
    def tok_per_s_std(self) -> float:
        rates = [self.tokens / s for s in self.seconds]
        return statistics.stdev(rates) if len(rates) > 1 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tok_per_s": self.tok_per_s, "tok_per_s_std": self.tok_per_s_std}


def run_benchmarks(backends: list[Backend], tests: list[Test], repetitions: int, progress: bool) -> list[Result]:
    """Each test's repetitions with the backends taking turns (A B A B ...), each warmed up first: on a shared
    machine whose speed drifts from minute to minute, a slow spell then slows every backend alike, instead of
    deciding the ratio by which backend ran in it. Results are listed backend by backend."""
    seconds: dict[tuple[int, Test], list[float]] = {}
    runs = sum(b.supports(t) for b in backends for t in tests) * repetitions
    with tqdm(total=runs, desc="Benchmarking", unit="run", disable=not progress) as bar:
        for test in tests:
            turns = [(i, b) for i, b in enumerate(backends) if b.supports(test)]
            for i, backend in turns:
                backend.run(Test("tg", 8, 4), random_prompts(Test("tg", 8, 4), backend.vocab_size, seed=-1))
                seconds[i, test] = []
            for rep in range(repetitions):
                for i, backend in turns:
                    bar.set_postfix_str(f"{backend.name} {test.name}")
                    seconds[i, test].append(backend.run(test, random_prompts(test, backend.vocab_size, seed=rep)))
                    bar.update(1)
    return [
        Result(b.name, b.dtype, t.name, t.kind, t.prompt_tokens, t.gen_tokens, t.concurrency, seconds[i, t])
        for i, b in enumerate(backends) for t in tests if (i, t) in seconds
    ]  # fmt: skip


def format_table(results: list[Result]) -> str:
    rows = [("backend", "dtype", "test", "t/s", "vs mistralpy")]
    ours = {r.test: r.tok_per_s for r in results if r.backend == "mistralpy"}
    for r in results:
        ratio = f"{ours[r.test] / r.tok_per_s:.2f}x" if r.backend != "mistralpy" and r.test in ours else ""
        rows.append((r.backend, r.dtype, r.test, f"{r.tok_per_s:.1f} ± {r.tok_per_s_std:.1f}", ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def to_json(results: list[Result], meta: dict) -> str:
    return json.dumps({"meta": meta, "results": [r.to_dict() for r in results]}, indent=2)
