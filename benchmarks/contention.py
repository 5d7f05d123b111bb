"""Graceful degradation on a busy machine: load time and decode speed quiet and with N busy processes, for mistralpy
and llama.cpp (llama-cpp-python) in the same run, on the embedded model.

    python benchmarks/contention.py [--busy 2] [--rounds 3] [--threads 2] [--tokens 64] [--json PATH]

A busy process is a Python busy loop in a session of its own, as another program is (one per core makes this
machine's cores "fully taken"; --same-session keeps them in this one, see `start_busy`). Every measurement runs
in a fresh process, started after the busy processes (so import, load and decode all run under the same load):
- mistralpy: `LLM()` construction (load), then the first token of a one-token prompt, then greedy decoding of
  --tokens tokens from a 16-token prompt (--reps times after a warm-up; the median rate).
- llama.cpp: `Llama(...)` construction with n_threads=--threads, then the same first token and decode, greedy.
Rounds alternate quiet and busy, so that a change in the machine's other load hits both conditions alike.

Targets (issue 19, "Contention"): mistralpy's load under load within 3x its quiet time, and its decode slowing
down no more than llama.cpp's does (ratio busy / quiet of the median tok/s, mistralpy's >= llama.cpp's).
mistralpy runs with its defaults (its thread policy included); --mistralpy-threads passes `num_threads` to `LLM`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOAD_TARGET = 3.0  # load busy / quiet at most
PROMPT_TOKENS = 16


def _prompt(vocab_size: int) -> list[int]:
    import random

    rng = random.Random(0)
    return [rng.randrange(1000, vocab_size - 1) for _ in range(PROMPT_TOKENS)]


def worker_mistralpy(args) -> dict:
    from mistralpy import LLM, SamplingParams

    options = {} if args.mistralpy_threads is None else {"num_threads": args.mistralpy_threads}
    start = time.perf_counter()
    llm = LLM(**options)
    load_s = time.perf_counter() - start
    llm.generate([[1]], SamplingParams(max_tokens=1, temperature=0))
    first_token_s = time.perf_counter() - start
    prompt = _prompt(llm.engine.model_config.vocab_size)
    params = SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True)
    llm.generate([prompt], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))  # warm-up
    rates = []
    for _ in range(args.reps):
        start = time.perf_counter()
        out = llm.generate([prompt], params)
        rates.append(len(out[0].outputs[0].token_ids) / (time.perf_counter() - start))
    return {"load_s": load_s, "first_token_s": first_token_s, "decode_tok_s": rates}


def worker_llama_cpp(args) -> dict:
    from llama_cpp import Llama

    from mistralpy.loader.default_model import default_model_path

    start = time.perf_counter()
    llm = Llama(default_model_path(), n_ctx=2048, n_batch=512, n_threads=args.threads, verbose=False)
    load_s = time.perf_counter() - start
    llm.eval([1])
    llm.sample(temp=0.0)
    first_token_s = time.perf_counter() - start
    prompt = _prompt(llm.n_vocab())

    def decode(n: int) -> float:
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        for _ in range(n - 1):
            llm.eval([llm.sample(temp=0.0)])  # greedy, like mistralpy's run
        llm.sample(temp=0.0)
        return n / (time.perf_counter() - start)

    decode(8)  # warm-up
    return {
        "load_s": load_s,
        "first_token_s": first_token_s,
        "decode_tok_s": [decode(args.tokens) for _ in range(args.reps)],
    }


ENGINES = {"mistralpy": worker_mistralpy, "llama.cpp": worker_llama_cpp}


def start_busy(n: int, same_session: bool) -> list[subprocess.Popen]:
    """Busy loops as other programs are: each in its own session, so Linux's autogroup scheduling (on by default)
    shares the CPU between them and the engine's session as between any programs. In the engine's own session they
    would share its session's part of the CPU with it instead: --same-session."""
    cmd = [sys.executable, "-c", "while True: pass"]
    return [subprocess.Popen(cmd, start_new_session=not same_session) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def _worker_env() -> dict:
    # this checkout's mistralpy, whichever one an editable install points at
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def measure(engine: str, busy: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--threads", str(args.threads), "--tokens", str(args.tokens)]
    cmd += ["--reps", str(args.reps)]
    if args.mistralpy_threads is not None:
        cmd += ["--mistralpy-threads", str(args.mistralpy_threads)]
    procs = start_busy(busy, args.same_session)
    try:
        time.sleep(0.5 if busy else 0)  # the busy loops are running before the engine starts
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_worker_env(), timeout=args.timeout)
    finally:
        stop_busy(procs)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} worker failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["decode_tok_s_median"] = statistics.median(result["decode_tok_s"])
    return result


def summarize(rows: list[dict], busy: int) -> dict:
    summary = {}
    for engine in ENGINES:
        mine = [r for r in rows if r["engine"] == engine]
        med = {
            cond: {
                key: statistics.median(r[key] for r in mine if r["busy"] == n)
                for key in ("load_s", "first_token_s", "decode_tok_s_median")
            }
            for cond, n in (("quiet", 0), ("busy", busy))
        }
        med["load_ratio"] = med["busy"]["load_s"] / med["quiet"]["load_s"]
        med["first_token_ratio"] = med["busy"]["first_token_s"] / med["quiet"]["first_token_s"]
        med["decode_ratio"] = med["busy"]["decode_tok_s_median"] / med["quiet"]["decode_tok_s_median"]
        summary[engine] = med
    ours, peer = summary["mistralpy"], summary["llama.cpp"]
    summary["targets"] = {
        "load_within_3x": ours["load_ratio"] <= LOAD_TARGET,
        "decode_degrades_no_more_than_llama_cpp": ours["decode_ratio"] >= peer["decode_ratio"],
    }
    return summary


def print_summary(summary: dict, busy: int) -> None:
    print(f"\n{'engine':10} {'':6} {'load s':>8} {'1st tok s':>10} {'decode tok/s':>13}")
    for engine in ENGINES:
        s = summary[engine]
        for cond in ("quiet", "busy"):
            m = s[cond]
            print(
                f"{engine:10} {cond:6} {m['load_s']:8.2f} {m['first_token_s']:10.2f} {m['decode_tok_s_median']:13.1f}"
            )
        print(
            f"{engine:10} ratio  {s['load_ratio']:8.2f} {s['first_token_ratio']:10.2f} {s['decode_ratio']:13.2f}"
            "  (busy / quiet)"
        )
    t = summary["targets"]
    ours, peer = summary["mistralpy"], summary["llama.cpp"]
    print(f"\nwith {busy} busy processes:")
    verdict = "PASS" if t["load_within_3x"] else "FAIL"
    print(f"  load within {LOAD_TARGET:.0f}x quiet: {ours['load_ratio']:.2f}x -> {verdict}")
    verdict = "PASS" if t["decode_degrades_no_more_than_llama_cpp"] else "FAIL"
    print(f"  decode busy/quiet {ours['decode_ratio']:.2f} vs llama.cpp {peer['decode_ratio']:.2f} -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=2, help="busy processes in the busy condition")
    parser.add_argument("--same-session", action="store_true", help="busy loops in this session (see start_busy)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp's n_threads")
    parser.add_argument("--mistralpy-threads", type=int, default=None, help="LLM(num_threads=...); default: its own")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per decode run")
    parser.add_argument("--reps", type=int, default=2, help="decode runs per process")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one measuring process may take")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/contention-DATE.json")
    parser.add_argument("--worker", choices=list(ENGINES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(ENGINES[args.worker](args)))
        return
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("benchmarks/contention.py compares with llama.cpp: install llama-cpp-python first "
                 "(bash ../shared/scripts/install-peers.sh)")  # fmt: skip
    if args.busy < 1 or args.rounds < 1 or args.reps < 1 or args.tokens < 2:
        sys.exit("--busy, --rounds and --reps must be >= 1, --tokens >= 2")
    rows = []
    for r in range(args.rounds):
        for busy in (0, args.busy):
            for engine in ENGINES:
                result = {"engine": engine, "busy": busy, "round": r, **measure(engine, busy, args)}
                rows.append(result)
                print(
                    f"round {r} {engine:10} busy={busy} load {result['load_s']:.2f} s, first token "
                    f"{result['first_token_s']:.2f} s, decode {result['decode_tok_s_median']:.1f} tok/s",
                    flush=True,
                )
    summary = summarize(rows, args.busy)
    print_summary(summary, args.busy)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        **{k: v for k, v in vars(args).items() if k not in ("worker", "json")},
    }
    path = args.json or ROOT / "benchmarks" / "results" / f"contention-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1) + "\n")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
