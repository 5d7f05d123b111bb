"""The fuzzer's parent side: runs the plan's cases in a worker process (tests/fuzz/worker.py), restarts it after a
crash or a hang, and judges every case: it must load, or fail with a MistralpyError of one short line, printing no
traceback, within CASE_TIMEOUT_S, its peak memory growing by no more than the file's size justifies."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .worker import CASE_TIMEOUT_S

STARTUP_TIMEOUT_S = 180.0  # imports and a warm-up load of each seed file, on a busy machine
MAX_MESSAGE = 300  # characters of an error message, the file's path not counted
RSS_SLACK_KIB = 64 << 10  # peak-memory growth any case may cause, plus RSS_PER_FILE_BYTE per byte of its file
RSS_PER_FILE_BYTE = 64
REPO = Path(__file__).resolve().parents[2]


@dataclass
class FuzzReport:
    results: list[dict] = field(default_factory=list)  # one {"start": ..., "end": ...} record per case
    findings: list[str] = field(default_factory=list)
    restarts: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.get("outcome") == outcome)


def judge(case: dict, timeout: float = CASE_TIMEOUT_S) -> str | None:
    """What is wrong with a finished case, or None."""
    if case["outcome"] == "error" and not case["mistralpy"]:
        return f"raised {case['type']}: {case['msg'][:200]}"
    if case["outcome"] == "error" and ("\n" in case["msg"] or len(case["msg"]) > MAX_MESSAGE):
        return f"message not one short line ({len(case['msg'])} characters): {case['msg'][:200]!r}"
    if "Traceback" in case["output"] or "panicked" in case["output"]:
        return f"printed: {case['output'][-300:]!r}"
    if case["seconds"] > timeout:
        return f"took {case['seconds']} s"
    allowed = RSS_SLACK_KIB + case["size"] * RSS_PER_FILE_BYTE // 1024
    if case["rss_growth_kib"] > allowed:
        return f"peak memory grew {case['rss_growth_kib'] >> 10} MiB (allowed {allowed >> 10} MiB)"
    return None


@dataclass(frozen=True)
class FuzzRun:
    bases_dir: Path  # holds the seed files (files.write_bases)
    seed: int
    cases: int
    timeout: float = CASE_TIMEOUT_S  # per case
    faults: str = ""  # injected into the worker, to test this harness
    warm_up: bool = True  # load each seed file once before the cases (their peak memory is measured from there)


def run(config: FuzzRun) -> FuzzReport:
    report, start = FuzzReport(), 0
    while start < config.cases:
        start = _run_worker(config, start, report)
    return report


def _run_worker(config: FuzzRun, start: int, report: FuzzReport) -> int:
    """Runs cases from `start` until the plan ends or the worker dies; returns where to go on from."""
    log = config.bases_dir / f"worker-{start}.log"
    cmd = [sys.executable, "-m", "tests.fuzz.worker", str(config.bases_dir), "--seed", str(config.seed), "--cases",
           str(config.cases), "--start", str(start), "--log", str(log), "--timeout", str(config.timeout),
           "--faults", config.faults] + ([] if config.warm_up else ["--no-warm-up"])  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE)
    reader, current, seed = _LineReader(proc.stdout.fileno()), None, config.seed
    while True:
        try:
            line = reader.readline(STARTUP_TIMEOUT_S if current is None else config.timeout)
        except TimeoutError:
            proc.kill()
            problem = f"no result within {config.timeout} s"
            break
        if line is None:
            code = proc.wait()
            if code == 0 and current is None:
                return config.cases
            problem = f"the worker died ({_exit_status(code)})"
            break
        record = json.loads(line)
        if "start" in record:
            current = record
            continue
        current.update(record)
        report.results.append(current)
        problem = judge(current, config.timeout)
        if problem:
            report.findings.append(_describe(current, seed, problem))
        current = None
    proc.wait()
    proc.stdout.close()
    report.restarts += 1
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    if current is None:
        raise RuntimeError(f"the fuzz worker failed outside any case ({problem}):\n{tail}")
    report.results.append({**current, "outcome": "crash"})
    report.findings.append(_describe(current, seed, f"{problem}; its output ends:\n{tail}"))
    return current["start"] + 1


def _describe(case: dict, seed: int, problem: str) -> str:
    where = f"case {case['start']} (seed {seed}, {case['base']}, {case['mode']}): {case['desc']}"
    return f"{where}: {problem}"


def _exit_status(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


class _LineReader:
    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def readline(self, timeout: float) -> bytes | None:
        """The next line, or None at the end of the stream; TimeoutError after `timeout` seconds without one."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line
