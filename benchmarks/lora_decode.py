"""Decode rate with LoRA adapters vs. without, in the same run: N concurrent requests spread over K adapters of rank R
on every projection (adapters written on the fly in PEFT's format for the model's shapes), against the same requests
on the base model (with LoRA off, and with LoRA on but no adapter named).

    python benchmarks/lora_decode.py [--requests 8] [--adapters 4] [--rank 16] [--tokens 64] [--model PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mistralpy import LLM, SamplingParams
from mistralpy.bench.lora import write_adapter
from mistralpy.lora import LoRARequest


def decode_rate(llm: LLM, prompts: list[str], tokens: int, loras) -> float:
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=1), lora_request=loras)  # adapters loaded, warm
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, lora_request=loras)
    elapsed = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--model", default=None)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    prompts = [f"Question {i}: tell me about the number {i}." for i in range(args.requests)]
    base = LLM(args.model)
    lora = LLM(args.model, enable_lora=True, max_loras=args.adapters, max_lora_rank=args.rank)
    with tempfile.TemporaryDirectory() as tmp:
        reqs = []
        for k in range(args.adapters):
            write_adapter(Path(tmp) / f"a{k}", lora.engine.model_config, args.rank, k)
            reqs.append(LoRARequest(f"a{k}", k + 1, str(Path(tmp) / f"a{k}")))
        loras = [reqs[i % args.adapters] for i in range(args.requests)]
        rates: dict[str, list[float]] = {"base": [], "lora on, no adapter": [], "adapters": []}
        for _ in range(args.rounds):  # interleaved: a busy machine slows every variant alike
            rates["base"].append(decode_rate(base, prompts, args.tokens, None))
            rates["lora on, no adapter"].append(decode_rate(lora, prompts, args.tokens, None))
            rates["adapters"].append(decode_rate(lora, prompts, args.tokens, loras))
    best = {k: max(v) for k, v in rates.items()}
    print(f"{args.requests} requests, {args.adapters} adapters of rank {args.rank}, {args.tokens} tokens each")
    for name, rate in best.items():
        print(f"  {name:22s} {rate:8.1f} tok/s  ({rate / best['base']:.0%} of base)")


if __name__ == "__main__":
    main()
