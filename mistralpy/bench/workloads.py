"""The benchmark tests (pp = prompt processing, tg = text generation, cN = N concurrent requests) and the
token prompts they use. Every backend runs the same Test objects."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Test:
    kind: str  # "pp", "tg" or "concurrent"
    prompt_tokens: int
    gen_tokens: int
    concurrency: int = 1

    @property
    def name(self) -> str:
        if self.kind == "pp":
            return f"pp{self.prompt_tokens}"
        if self.kind == "tg":
            return f"tg{self.gen_tokens}"
        return f"c{self.concurrency} pp{self.prompt_tokens}+tg{self.gen_tokens}"

    @property
    def counted_tokens(self) -> int:
        """The tokens the throughput is measured in: prompt tokens for pp, generated tokens otherwise."""
        return self.prompt_tokens if self.kind == "pp" else self.gen_tokens * self.concurrency


def build_tests(prompts: list[int], gens: list[int], concurrency: list[int], concurrent_prompt: int) -> list[Test]:
    tests = [Test("pp", p, 1) for p in prompts if p > 0]
    tests += [Test("tg", 1, n) for n in gens if n > 0]
    gen = max(gens) if gens else 128
    # c1 is the single-request rate of the same workload as the cN tests (prefill included), their natural baseline
    tests += [Test("concurrent", concurrent_prompt, gen, c) for c in concurrency if c >= 1]
    return tests


def random_prompts(test: Test, vocab_size: int, seed: int) -> list[list[int]]:
    """Distinct random prompts (no prefix-cache hits), avoiding the low ids where special tokens usually live."""
    rng = random.Random(seed)
    low, high = min(1000, vocab_size // 4), vocab_size - 1
    return [[rng.randrange(low, high) for _ in range(test.prompt_tokens)] for _ in range(test.concurrency)]


def parse_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise ValueError(f"expected non-negative integers, got {text!r}")
    return values
