"""`mistralpy bench` smoke test with tiny settings: valid JSON, every test timed; bad arguments are clear errors."""

from __future__ import annotations

import json

import pytest

from . import machine
from .test_cli import run_cli


def test_bench_json(tiny_llama):
    args = ["bench", "-m", str(tiny_llama[2]), "-p", "16", "-n", "4", "--concurrency", "1,3", "-r", "2", "--json"]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["meta"]["repetitions"] == 2
    assert report["meta"]["isa"] == machine.ISA_LEVEL and report["meta"]["native_kernels"] == machine.CAN_BUILD_NATIVE
    rows = {r["test"]: r for r in report["results"]}
    assert set(rows) == {"pp16", "tg4", "c1 pp64+tg4", "c3 pp64+tg4"}
    for row in rows.values():
        assert row["backend"] == "mistralpy" and len(row["seconds"]) == 2 and row["tok_per_s"] > 0
    assert rows["c3 pp64+tg4"]["concurrency"] == 3


def test_bench_table_and_errors(tiny_llama):
    out = run_cli("bench", "-m", str(tiny_llama[2]), "-p", "8", "-n", "2", "--concurrency", "1", "-r", "1")
    assert out.returncode == 0, out.stderr
    assert "| backend" in out.stdout and all(test in out.stdout for test in ("pp8", "tg2", "c1 pp64+tg2"))
    assert out.stdout.startswith(f"ISA level: {machine.ISA_LEVEL} (")
    bad = run_cli("bench", "-m", str(tiny_llama[2]), "--compare", "vllm")
    assert bad.returncode == 1 and "unknown peer 'vllm'" in bad.stderr
    bad = run_cli("bench", "-m", str(tiny_llama[2]), "-p", "a,b")
    assert bad.returncode == 1 and "comma-separated list of integers" in bad.stderr


def test_bench_structured_json_and_table(tiny_llama):
    args = ["bench", "-m", str(tiny_llama[2]), "--structured", "--concurrency", "1,3", "-n", "16", "-r", "2"]
    out = run_cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["concurrency"]: r for r in json.loads(out.stdout)["structured"]}
    assert set(rows) == {1, 3}
    for c, row in rows.items():
        assert row["test"] == f"json c{c}" and len(row["tokens"]) == 2
        assert all(n > 0 for n in row["tokens"]) and len(row["constrained_seconds"]) == len(row["free_seconds"]) == 2
        rates = [n / s for n, s in zip(row["tokens"], row["constrained_seconds"], strict=True)]
        assert row["constrained_tok_per_s"] == pytest.approx(sum(rates) / 2)
        ratios = [f / s for f, s in zip(row["free_seconds"], row["constrained_seconds"], strict=True)]
        assert row["ratio"] == pytest.approx(sum(ratios) / 2)
    table = run_cli(*args[:-2], "-r", "1")
    assert table.returncode == 0, table.stderr
    assert "| test" in table.stdout and "json c1" in table.stdout and "json c3" in table.stdout
    bad = run_cli("bench", "-m", str(tiny_llama[2]), "--structured", "-p", "16")
    assert bad.returncode == 1 and "-p/--n-prompt do not apply to --structured" in bad.stderr


def test_bench_llama_bench_peer_errors(tiny_llama, tmp_path):
    alone = run_cli("bench", "-m", str(tiny_llama[2]), "--llama-bench", "/bin/true")
    assert alone.returncode == 1 and "give --compare llama-cpp too" in alone.stderr
    missing = run_cli("bench", "-m", str(tiny_llama[2]), "--compare", "llama-cpp", "--llama-bench", str(tmp_path / "x"))
    assert missing.returncode == 1 and "not an executable file" in missing.stderr
    structured = run_cli("bench", "-m", str(tiny_llama[2]), "--structured", "--llama-bench", "/bin/true")
    assert structured.returncode == 1 and "--llama-bench do not apply to --structured" in structured.stderr


def test_llama_bench_output_parsing():
    from mistralpy.bench.llama_bench import parse_seconds
    from mistralpy.errors import InvalidRequestError

    # the shape of `llama-bench -o json` (one object per test; avg_ns is the mean over its repetitions)
    row = {"n_prompt": 512, "n_gen": 0, "n_threads": 2, "avg_ns": 1_750_000_000, "avg_ts": 292.57}
    assert parse_seconds(json.dumps([row])) == 1.75
    with pytest.raises(InvalidRequestError, match="printed no result"):
        parse_seconds("main: error: failed to load model")


class _Recorder:
    """A backend that logs each run it is given (the runner's warm-up is tg4) and takes a fixed time."""

    vocab_size = 1000
    dtype = "none"

    def __init__(self, name: str, log: list, seconds: float, concurrent: bool) -> None:
        self.name, self.log, self.time, self.concurrent = name, log, seconds, concurrent

    def supports(self, test) -> bool:
        return self.concurrent or test.concurrency == 1

    def run(self, test, prompts) -> float:
        self.log.append((self.name, test.name))
        return self.time


def test_backends_take_turns_within_each_test():
    from mistralpy.bench.runner import run_benchmarks
    from mistralpy.bench.workloads import build_tests

    log: list = []
    backends = [_Recorder("a", log, 2.0, True), _Recorder("b", log, 4.0, False)]
    results = run_benchmarks(backends, build_tests([16], [], [2], 64), repetitions=2, progress=False)
    assert log == [
        ("a", "tg4"), ("b", "tg4"), ("a", "pp16"), ("b", "pp16"), ("a", "pp16"), ("b", "pp16"),
        ("a", "tg4"), ("a", "c2 pp64+tg128"), ("a", "c2 pp64+tg128"),
    ]  # fmt: skip
    assert [(r.backend, r.test, r.seconds) for r in results] == [
        ("a", "pp16", [2.0, 2.0]), ("a", "c2 pp64+tg128", [2.0, 2.0]), ("b", "pp16", [4.0, 4.0]),
    ]  # fmt: skip
    assert results[0].tok_per_s == 8.0 and results[2].tok_per_s == 4.0
