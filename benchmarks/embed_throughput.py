"""Embedding throughput: texts/s of LLM.embed against sentence-transformers on the same folder, in the same run.

    python benchmarks/embed_throughput.py [--texts 256] [--dtype float32] [--budget 512] [--repeats 3]

256 texts of mixed length (3 to 150 words, seeded), the embedded all-MiniLM-L6-v2 unless --model. Each side is
warmed up once, then timed `--repeats` times; the best run of each is reported, and their ratio."""

from __future__ import annotations

import argparse
import json
import random
import time

import torch


def mixed_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ("the quick brown fox jumps over a lazy dog while embeddings of every sentence land in a vector space "
             "where search engines find neighbours fast on plain CPUs").split()  # fmt: skip
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 150))) for _ in range(count)]


def best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("--texts", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--budget", type=int, default=512, help="max_num_batched_tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers' encode batch (its default)")
    args = p.parse_args()
    from sentence_transformers import SentenceTransformer

    from mistralpy import LLM
    from mistralpy.embed.default_model import default_embedding_model_path

    path = args.model or default_embedding_model_path()
    texts = mixed_texts(args.texts)
    llm = LLM(path, dtype=args.dtype, task="embed", max_num_batched_tokens=args.budget)
    st = SentenceTransformer(path, device="cpu")
    ours = best_seconds(lambda: llm.embed(texts), args.repeats)
    theirs = best_seconds(lambda: st.encode(texts, batch_size=args.st_batch_size), args.repeats)
    print(json.dumps({
        "texts": len(texts), "dtype": args.dtype, "budget": args.budget, "threads": torch.get_num_threads(),
        "mistralpy_texts_per_s": round(len(texts) / ours, 1),
        "sentence_transformers_texts_per_s": round(len(texts) / theirs, 1), "ratio": round(theirs / ours, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
