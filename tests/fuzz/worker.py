"""The fuzz worker: `python -m tests.fuzz.worker BASES_DIR --cases N --start K --log LOG` loads cases K.. of the plan
one after the other, as a user would load a model, and reports each on stdout as JSON lines ({"start": i, ...}
before, {"end": i, ...} after). Its own stdout and stderr go to LOG, read back per case: a traceback or a panic
printed there is a finding too. A crash or hang ends the worker; the parent sees which case started last."""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import torch

from mistralpy.errors import MistralpyError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.models import resolve_model_class
from mistralpy.tokenizer import Tokenizer

from .files import BASES
from .mutations import plan

CASE_TIMEOUT_S = 10.0
MODES = {"bf16-quantized": (torch.bfloat16, "quantized"), "f32-dequantized": (torch.float32, "dequantized")}
ADDRESS_SPACE_HEADROOM = 6 << 30  # what a case may map beyond the warmed-up worker: a runaway allocation fails fast


def load(path: Path, mode: str) -> None:
    """What a user's load does (the engine's order), then one use of what loaded: the tokenizer round-trips a text
    and the model runs a prefill step on it."""
    from mistralpy.engine.model_runner import ModelRunner

    from ..model_steps import BLOCK, prefill

    dtype, weights = MODES[mode]
    source = open_model_source(path)
    cfg = source.model_config()
    resolve_model_class(cfg)
    tokenizer = Tokenizer.from_gguf_metadata(source.metadata)
    model = load_model(source, dtype, weights=weights)
    ids = tokenizer.encode("abc ab!", add_special_tokens=True)
    tokenizer.decode(ids)
    # the engine refuses prompt ids past the model's vocabulary and prompts past its context (_validate_prompt)
    ids = [i for i in ids if i < cfg.vocab_size][: min(3, cfg.max_position_embeddings)] or [0]
    runner = ModelRunner(model, 1, BLOCK, dtype)
    with torch.inference_mode():
        prefill(runner, ids, 0)


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _limit_address_space() -> None:
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _fault(kind: str):
    """A stand-in for `load` that fails as a loader bug would: the harness's own test shows it catches each."""

    def fault(path: Path, mode: str) -> None:
        if kind == "abort":
            os.abort()
        if kind == "hang":
            time.sleep(3600)
        if kind == "print":
            try:
                raise RuntimeError("handled, but printed")
            except RuntimeError:
                traceback.print_exc()
            return
        raise ValueError(f"a {kind} fault")

    return fault


def run_case(path: Path, mode: str, loader=load) -> dict:
    started, rss = time.monotonic(), _rss_kib()
    result: dict = {"outcome": "ok"}
    try:
        loader(path, mode)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: B036  (a Rust panic is a BaseException: it is a finding, not a crash)
        result = {"outcome": "error", "type": f"{type(e).__module__}.{type(e).__qualname__}", "msg": str(e)[:2000],
                  "mistralpy": isinstance(e, MistralpyError)}  # fmt: skip
    result.update(seconds=round(time.monotonic() - started, 3), rss_growth_kib=_rss_kib() - rss)
    return result


class _Output:
    """The worker's stdout and stderr, both sent to one log file, read back case by case."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        self.position = 0

    def mark(self) -> None:
        self.position = os.lseek(self.fd, 0, os.SEEK_END)

    def since_mark(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        with open(self.log, "rb") as f:
            f.seek(self.position)
            return f.read(4000).decode(errors="replace")


def main(args: argparse.Namespace) -> None:
    report = os.fdopen(os.dup(1), "w", buffering=1)
    output = _Output(args.log)
    faulthandler.enable()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is a finding, not a core file in the repository
    folder = Path(args.bases_dir)
    bases = {name: (folder / file_name).read_bytes() for name, (file_name, _) in BASES.items()}
    for file_name, _ in BASES.values() if args.warm_up else ():  # every path a case takes is imported and sized
        for mode in MODES:
            load(folder / file_name, mode)
    _limit_address_space()
    faults = dict(item.split(":") for item in args.faults.split(",") if item)
    cases = plan(bases, args.seed, args.cases)
    (folder / "cases").mkdir(exist_ok=True)
    for index in range(args.start, len(cases)):
        case, mode = cases[index], list(MODES)[(index + args.seed) % len(MODES)]
        path = folder / "cases" / f"case{index}{'.bin' if case.base == 'ggml' else '.gguf'}"
        path.write_bytes(case.make())
        start = {"start": index, "base": case.base, "desc": case.desc, "mode": mode, "size": path.stat().st_size}
        report.write(json.dumps(start) + "\n")
        output.mark()
        faulthandler.dump_traceback_later(args.timeout - 1)
        result = run_case(path, mode, _fault(faults[str(index)]) if str(index) in faults else load)
        faulthandler.cancel_dump_traceback_later()
        result["msg"] = result.get("msg", "").replace(str(path), "<file>")
        result["output"] = output.since_mark()
        path.unlink()
        report.write(json.dumps({"end": index, **result}) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bases_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="per case (a traceback is dumped)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false", help="(for the harness test)")
    parser.add_argument("--faults", default="", help="INDEX:KIND,... (abort, hang, print, raise) for the harness test")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
