"""Start-up time and memory of the embedded model, each measurement in a fresh process.

    python benchmarks/startup_memory.py [--rounds 3] [--threads 2] [--server-clients 32] [--server-bursts 3]
        [--server-max-tokens 128] [--server-only [--server-kv-cache-dtype int8]]

Per round: seconds from `LLM()` (mistralpy already imported) to the first generated token, the import time, and the
peak RSS of a serving-like run (LLM() + 16 concurrent chat requests of 64 tokens), with the RSS after load for scale.
Then the peak RSS of a `mistralpy serve` process after each of --server-bursts bursts of --server-clients concurrent
chat requests of 128 tokens (half of them streamed), with the default KV cache (int8 rows for this quantized model)
and with `--kv-cache-dtype auto` (bf16 rows). The KV cache takes ~12 KB a token in int8 and ~23 KB in bf16 with the
embedded model; its pool's pages are taken as blocks are first used, and freed blocks are reused before unused ones,
so later bursts of the same size reuse the first one's blocks.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def run_one(threads: int) -> dict:
    start = time.perf_counter()
    import torch

    from mistralpy import LLM, SamplingParams

    import_s = time.perf_counter() - start
    torch.set_num_threads(threads)
    start = time.perf_counter()
    llm = LLM()
    llm.generate("Hi", SamplingParams(max_tokens=1, temperature=0))
    first_token_s = time.perf_counter() - start
    loaded_mb = _rss_mb()
    chats = [[{"role": "user", "content": f"Tell me a fact about the number {i}."}] for i in range(16)]
    llm.chat(chats, SamplingParams(max_tokens=64, temperature=0.7, seed=0))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "import_s": import_s,
        "first_token_s": first_token_s,
        "rss_after_load_mb": loaded_mb,
        "peak_rss_mb": peak_mb,
    }


def _status_mb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{key}:")) / 1024


def _chat(url: str, i: int, max_tokens: int) -> int:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": f"Write a story about the number {i}, with some detail."}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": i % 2 == 0,
    }
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return len(response.read())


def server_peak(clients: int, bursts: int, kv_cache_dtype: str | None, max_tokens: int = 128) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mistralpy", "serve", "--port", str(port), "--log-level", "warning"]
    cmd += ["--kv-cache-dtype", kv_cache_dtype] if kv_cache_dtype else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        ready_mb, peaks = _status_mb(proc.pid, "VmRSS"), []
        for burst in range(bursts):
            with ThreadPoolExecutor(clients) as pool:
                ids = range(
                    burst * clients, (burst + 1) * clients
                )  # new prompts: no prefix-cache hits past the system's
                list(pool.map(lambda i: _chat(f"{base}/v1/chat/completions", i, max_tokens), ids))
            peaks.append(_status_mb(proc.pid, "VmHWM"))
        return {"rss_ready_mb": ready_mb, "peak_rss_mb_after_each_burst": peaks}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server-clients", type=int, default=32)
    parser.add_argument("--server-bursts", type=int, default=3)
    parser.add_argument("--server-max-tokens", type=int, default=128, help="tokens each chat of a burst generates")
    parser.add_argument("--server-only", action="store_true", help="only the server's peaks (a slow level: portable)")
    parser.add_argument("--server-kv-cache-dtype", choices=["auto", "int8"], help="--server-only: its K/V")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.threads)))
        return
    if args.server_only:
        kv = args.server_kv_cache_dtype
        peak = server_peak(args.server_clients, args.server_bursts, kv, args.server_max_tokens)
        print(json.dumps({"server": {f"{kv or 'default'} K/V": peak, "max_tokens": args.server_max_tokens}}, indent=2))
        return
    runs = []
    for _ in range(args.rounds):
        cmd = [sys.executable, __file__, "--one", "--threads", str(args.threads)]
        runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    summary = {
        key: {"median": statistics.median(r[key] for r in runs), "best": min(r[key] for r in runs)} for key in runs[0]
    }
    server = {
        name: server_peak(args.server_clients, args.server_bursts, dtype, args.server_max_tokens)
        for name, dtype in (("default (int8 K/V)", None), ("auto (bf16 K/V)", "auto"))
    }
    print(json.dumps({"runs": runs, "summary": summary, "server": server}, indent=2))


if __name__ == "__main__":
    main()
