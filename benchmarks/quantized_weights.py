"""Quantized weights (int4 kernels) vs dequantized dense bf16 weights on the embedded model, same run.

    python benchmarks/quantized_weights.py [--rounds 3] [--threads 2] [--profile]

Each mode runs in its own process (for a clean peak RSS), alternating, `--rounds` times: single-request greedy
decode of 128 tokens and one 512-token prefill. Prints the median and best tok/s and the peak RSS per mode.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MODES = ("dequantized", "quantized")


def run_one(mode: str, threads: int, profile: bool) -> dict:
    import torch

    from mistralpy import LLM, SamplingParams

    torch.set_num_threads(threads)
    start = time.perf_counter()
    llm = LLM(dtype="bfloat16", weights=mode)
    load_s = time.perf_counter() - start
    decode = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
    prefill = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    prompt_512 = [(i * 7919) % 40000 + 100 for i in range(512)]
    llm.generate("Warm up", SamplingParams(temperature=0, max_tokens=8))
    llm.generate([prompt_512[:64]], prefill)
    start = time.perf_counter()
    llm.generate("The capital of France is", decode)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    llm.generate([prompt_512], prefill)
    prefill_s = time.perf_counter() - start
    if profile:
        _profile(llm, decode, prompt_512, prefill)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "load_s": load_s, "decode_tok_s": 128 / decode_s, "prefill_tok_s": 512 / prefill_s,
            "peak_rss_mb": rss_mb}  # fmt: skip


def _profile(llm, decode, prompt_512, prefill) -> None:
    from torch.profiler import ProfilerActivity, profile

    for name, prompts, params in (
        ("decode 32", "The capital of France is", decode),
        ("prefill 512", [prompt_512], prefill),
    ):
        if name.startswith("decode"):
            params = type(params)(temperature=0, max_tokens=32, ignore_eos=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            llm.generate(prompts, params)
        print(f"--- {name}", file=sys.stderr)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.threads, args.profile)))
        return
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--child", mode, "--threads", str(args.threads)]
            out = subprocess.run(
                cmd + (["--profile"] if args.profile else []), check=True, capture_output=True, text=True
            )
            if args.profile:
                print(out.stderr)
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for mode, runs in results.items():
        line = [mode]
        for key in ("decode_tok_s", "prefill_tok_s", "peak_rss_mb", "load_s"):
            values = [r[key] for r in runs]
            best = min(values) if key in ("peak_rss_mb", "load_s") else max(values)
            line.append(f"{key} median {statistics.median(values):.1f} best {best:.1f}")
        print(" | ".join(line))


if __name__ == "__main__":
    main()
