"""Tensor parallelism on this machine: decode tokens/s of TP=2 (rank 0 + one spawned worker, gloo) against TP=1, and
where a TP=2 step's time goes on rank 0: the step's broadcast to the worker, the all-reduces, the logits gathers
(each collective's time on rank 0 includes waiting for the worker to reach it).

    PYTHONPATH=. python benchmarks/tensor_parallel.py [--model PATH] [-c 1 4] [-n 64] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict

from mistralpy import LLM, SamplingParams
from mistralpy.distributed.tensor_parallel.group import TPGroup
from mistralpy.distributed.tensor_parallel.launch import TensorParallel

PROMPT = "Write a short story about a lighthouse keeper who finds a fox on the frozen strait."


class CollectiveTimer:
    """Seconds and calls of rank 0's collectives, by kind, while installed (the class's methods wrapped)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        for kind, cls, name in (("all_reduce", TPGroup, "all_reduce"), ("gather_logits", TPGroup, "gather_logits"),
                                ("broadcast", TensorParallel, "send")):  # fmt: skip
            setattr(cls, name, self._timed(kind, getattr(cls, name)))

    def _timed(self, kind: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[kind] += time.perf_counter() - start
                self.calls[kind] += 1

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def decode_rate(llm: LLM, concurrency: int, tokens: int) -> tuple[float, int]:
    """(generated tokens/s, engine steps) of `concurrency` greedy requests of `tokens` tokens each."""
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    steps, step = 0, llm.engine.step

    def counted(*args, **kwargs):
        nonlocal steps
        steps += 1
        return step(*args, **kwargs)

    llm.engine.step = counted
    start = time.perf_counter()
    outs = llm.generate([PROMPT] * concurrency, params)
    seconds = time.perf_counter() - start
    llm.engine.step = step
    return sum(len(o.outputs[0].token_ids) for o in outs) / seconds, steps


def _ping(rank: int, init: str, hidden: int, rounds: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from mistralpy.distributed.tensor_parallel.group import init_group

    torch.set_num_threads(1)
    group = init_group(rank, 2, init, 60)
    x = torch.ones(1, hidden)
    for _ in range(20):
        group.all_reduce(x)
    start = time.perf_counter()
    for _ in range(rounds):
        group.all_reduce(x)
    if rank == 0:
        with open(out, "w") as f:
            f.write(str((time.perf_counter() - start) / rounds))
    dist.destroy_process_group()


def all_reduce_latency(hidden: int, rounds: int = 500) -> float:
    """Milliseconds of one all-reduce of a decode token's hidden state between 2 processes doing nothing else."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_ping, (f"file://{d}/init", hidden, rounds, f"{d}/out"), nprocs=2)
        with open(f"{d}/out") as f:
            return 1000 * float(f.read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("-c", type=int, nargs="+", default=[1, 4], help="concurrent requests")
    p.add_argument("-n", type=int, default=64, help="tokens per request")
    args = p.parse_args()
    timer = CollectiveTimer()
    options = dict(dtype=args.dtype, max_model_len=512, kv_cache_tokens=4096)
    llms = {"tp1": LLM(args.model, **options), "tp2": LLM(args.model, tensor_parallel_size=2, **options)}
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg()}
    for c in args.c:
        for name, llm in llms.items():
            decode_rate(llm, c, 8)  # warm-up
            timer.reset()
            rate, steps = decode_rate(llm, c, args.n)
            row = {"tok_per_s": round(rate, 2), "steps": steps}
            if name == "tp2":
                row["ms_per_step"] = {k: round(1000 * s / steps, 3) for k, s in timer.seconds.items()}
                row["calls_per_step"] = {k: round(n / steps, 1) for k, n in timer.calls.items()}
            report[f"c{c}_{name}"] = row
    hidden = llms["tp1"].engine.model_config.hidden_size
    report["all_reduce_alone_ms"] = round(all_reduce_latency(hidden), 3)
    report["loadavg_after"] = os.getloadavg()
    llms["tp2"].engine.tp.close()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
