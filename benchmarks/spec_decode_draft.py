"""Speculative decoding against plain decoding in one process, runs interleaved: tokens/s (aggregate over the
concurrent requests) and whether the greedy outputs are equal.

  --method draft: target = the embedded model with dense bf16 weights (weights="dequantized"), draft = the embedded
                  Q4_1 GGUF itself (quantized self-speculation), or --target / --draft.
  --method ngram: the embedded model with its default weights, prompt lookup.

    PYTHONPATH=. python benchmarks/spec_decode_draft.py [--method draft|ngram] [-c 1] [-k 4] [-n 128] [-r 3]
"""

from __future__ import annotations

import argparse
import json
import time

from mistralpy import LLM, SamplingParams
from mistralpy.loader.default_model import default_model_path

TOPICS = [
    "a lighthouse keeper and a fox", "the history of the bicycle", "how bread rises", "a city under the sea",
    "why the sky is blue", "a robot learning to paint", "the water cycle", "a journey across a desert",
    "how vaccines work", "a library that never closes", "the life of a honeybee", "a winter in the mountains",
    "how a compiler works", "a dragon who hates gold", "the first flight", "a market in the morning",
]  # fmt: skip


def prompts(llm: LLM, count: int) -> list[list[int]]:
    tokenizer = llm.get_tokenizer()
    asks = [f"Write a short story about {TOPICS[i % len(TOPICS)]}." if i % 2 == 0
            else f"Explain {TOPICS[i % len(TOPICS)]} in a few paragraphs." for i in range(count)]  # fmt: skip
    return [tokenizer.apply_chat_template([{"role": "user", "content": a}], tokenize=True) for a in asks]


def engines(args: argparse.Namespace) -> dict[str, LLM]:
    spec: dict = {"num_speculative_tokens": args.k, "adaptive_k": not args.fixed_k}
    if args.method == "draft":
        target = dict(model=args.target, dtype="bfloat16", weights="dequantized")
        spec["model"] = args.draft or default_model_path()
    else:
        target = dict(model=args.target)
        spec.update(method="ngram", prompt_lookup_min=1, prompt_lookup_max=4)
    return {"plain": LLM(**target), "spec": LLM(**target, speculative_config=spec)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=["draft", "ngram"], default="draft")
    p.add_argument("--target", default=None, help="default: the embedded model")
    p.add_argument("--draft", default=None, help="default: the embedded Q4_1 GGUF")
    p.add_argument("-c", type=int, default=1, help="concurrent requests")
    p.add_argument("-k", type=int, default=4, help="num_speculative_tokens")
    p.add_argument("--fixed-k", action="store_true", help="adaptive_k off")
    p.add_argument("-n", type=int, default=128, help="tokens to generate per request")
    p.add_argument("-r", type=int, default=3, help="timed runs of each")
    args = p.parse_args()
    llms = engines(args)
    batch = prompts(llms["plain"], args.c)
    params = SamplingParams(temperature=0, max_tokens=args.n)
    outputs, rates = {}, {name: [] for name in llms}
    for name, llm in llms.items():  # warm-up
        outputs[name] = [o.outputs[0].token_ids for o in llm.generate(batch, params)]
    for _ in range(args.r):
        for name, llm in llms.items():
            start = time.perf_counter()
            out = [o.outputs[0].token_ids for o in llm.generate(batch, params)]
            rates[name].append(sum(map(len, out)) / (time.perf_counter() - start))
            assert out == outputs[name], f"{name}: greedy output changed between runs"
    stats = llms["spec"].engine.speculator.stats
    median = {name: sorted(values)[len(values) // 2] for name, values in rates.items()}
    report = {
        "method": args.method, "concurrency": args.c, "k": args.k, "adaptive_k": not args.fixed_k,
        "generated_tokens": sum(map(len, outputs["plain"])),
        "same_output": outputs["plain"] == outputs["spec"],
        "tok_per_s": {name: [round(r, 2) for r in values] for name, values in rates.items()},
        "speedup_of_medians": round(median["spec"] / median["plain"], 3),
        "draft_tokens": stats.num_draft_tokens, "acceptance_rate": round(stats.acceptance_rate, 3),
        "mean_accepted_length": round(stats.mean_accepted_length, 3),
    }  # fmt: skip
    policy = llms["spec"].engine.speculator.policy
    if policy is not None:
        report["measured_draft_cost"] = round(policy.draft_cost, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
