"""`mistralpy bench --embed`: embedding texts/s of mistralpy against sentence-transformers on the same model folder, in
the same run and process (same threads): 256 seeded texts of 3 to 150 words by default. Each side is warmed up once,
then timed `repetitions` times; the best run of each, and their ratio, are reported."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..errors import InvalidRequestError

_WORDS = ("the quick brown fox jumps over a lazy dog while embeddings of every sentence land in a vector space where "
          "search engines find neighbours fast on plain CPUs").split()  # fmt: skip


@dataclass
class EmbedResult:
    texts: int
    mistralpy_texts_per_s: float
    sentence_transformers_texts_per_s: float

    @property
    def ratio(self) -> float:
        return self.mistralpy_texts_per_s / self.sentence_transformers_texts_per_s

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 2)}


def mixed_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 150))) for _ in range(count)]


def best_seconds(fn: Callable[[], object], repetitions: int) -> float:
    fn()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_embed(llm, model_path: str, texts: list[str], repetitions: int, st_batch_size: int = 32) -> EmbedResult:
    """`llm`: an LLM with task "embed" on `model_path`; sentence-transformers encodes with its default batch size."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InvalidRequestError(
            "--embed compares with sentence-transformers: pip install sentence-transformers torch==<this torch>"
        ) from None
    st = SentenceTransformer(model_path, device="cpu")
    ours = best_seconds(lambda: llm.embed(texts), repetitions)
    theirs = best_seconds(lambda: st.encode(texts, batch_size=st_batch_size), repetitions)
    return EmbedResult(len(texts), round(len(texts) / ours, 1), round(len(texts) / theirs, 1))


def format_embed_table(result: EmbedResult, dtype: str) -> str:
    return "\n".join([
        "| backend | dtype | texts | texts/s |",
        "|---|---|---:|---:|",
        f"| mistralpy | {dtype} | {result.texts} | {result.mistralpy_texts_per_s} |",
        f"| sentence-transformers | float32 | {result.texts} | {result.sentence_transformers_texts_per_s} |",
        f"\nratio: {result.ratio:.2f}x",
    ])  # fmt: skip
