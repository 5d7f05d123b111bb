"""Soak: many concurrent clients against a real `mistralpy serve`, with hang-ups, bad inputs, missing keys and 1 MB
bodies, for a bounded time; then the checks. Run from the repository root:

    python -m benchmarks.soak [--duration 60] [--clients 128] [-m MODEL] [--serve-args "..."] [--out FILE]

Phases: the server starts (the embedded model unless -m); a warm-up of the same load (--warmup seconds); the soak
(--duration seconds, clients finish the request they are in); then, with the server idle: /metrics (0 running,
0 waiting, every KV block free again) and its RSS against the RSS after the warm-up; then each distinct request of
the pool alone, one after another, with a cache_salt of its own (nothing the soak computed is reused), whose text
every answer of the soak must equal; then SIGTERM. Checks: no 5xx (as the clients saw them and in the server's access
log, which also has the requests whose client left), every valid request answered in full unless hung up on
purpose, every bad input answered with its status and an OpenAI error body, identical texts, no leak, RSS within 10%,
no traceback in the server log, exit code 0. The JSON report goes to benchmarks/results/soak-DATE.json (or --out);
the exit code is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .soak_clients import Clients, Tally
from .soak_report import check, count_5xx, machine, mismatches, print_checks, tally_figures, write_report
from .soak_requests import PROMPTS, ValidRequest, answer_texts, bad_inputs, valid_pool
from .soak_server import SoakServer

SERVED = "soak"
REFERENCE_SALT = "soak-reference"
ABORTED = 'request_finished_total{reason="abort"}'
MAX_BODY_BYTES = 10 * 1024 * 1024  # the server's default --max-body-bytes


@dataclass
class SoakConfig:
    model: str | None = None  # None: the embedded model
    duration: float = 60.0
    warmup: float = 10.0
    clients: int = 128
    prompts: int = len(PROMPTS)
    seed: int = 0
    timeout: float = 300.0  # one request's limit on the client side
    serve_args: list[str] = field(default_factory=list)
    rss_tolerance: float = 0.10


def run_soak(cfg: SoakConfig, command: str) -> dict[str, Any]:
    server = SoakServer(cfg.model, ["--served-model-name", SERVED, *cfg.serve_args])
    report = None
    try:
        server.wait_ready()
        report = _soak(server, cfg, command)
        return report
    finally:
        server.stop()
        if report is not None and report["ok"]:
            server.remove_log()
        else:
            print(f"the server's log: {server.log_path}", file=sys.stderr)


def _soak(server: SoakServer, cfg: SoakConfig, command: str) -> dict[str, Any]:
    pool, bad = valid_pool(cfg.prompts, SERVED), bad_inputs(SERVED, MAX_BODY_BYTES)
    start_metrics, rss_ready = server.metrics(), server.status_kib("VmRSS")
    ready_from = len(server.log())  # before: /health polled while the model loads, answered 503 on purpose
    warm = _phase(server, cfg, pool, bad, cfg.warmup, cfg.seed + 1)
    warm_metrics, rss_warm = _settle(server)
    log_from = len(server.log())
    peak = RssPeak(server)
    started = time.monotonic()
    with peak:
        soak = _phase(server, cfg, pool, bad, cfg.duration, cfg.seed)
    wall = time.monotonic() - started
    idle, rss_after = _settle(server)
    server_statuses = server.access_statuses(server.log()[log_from:])
    reference = _alone(server, pool, cfg.timeout)
    bad_texts, examples = mismatches([warm, soak], reference)
    tracebacks = server.tracebacks()
    all_statuses = server.access_statuses(server.log()[ready_from:])
    exit_code = server.stop()
    leaked = int(start_metrics["num_free_kv_blocks"] - idle["num_free_kv_blocks"])
    rss = {"ready_mib": rss_ready / 1024, "warmup_mib": rss_warm / 1024, "after_mib": rss_after / 1024,
           "peak_during_soak_mib": peak.kib / 1024, "vm_hwm_mib": peak.hwm_kib / 1024}  # fmt: skip
    rss["after_over_warmup"] = rss_after / rss_warm
    soak_figures = tally_figures(soak)
    figures = {
        **soak_figures,
        "duration_s": cfg.duration,
        "wall_s": wall,
        "clients": cfg.clients,
        "distinct_requests": len(pool),
        "answered_per_s": soak.answered / wall,
        "generated_tokens": idle["generation_tokens_total"] - warm_metrics["generation_tokens_total"],
        "server_status_codes": {str(k): v for k, v in sorted(server_statuses.items())},
        "mismatches": bad_texts,
        "rss": rss,
        "preemptions": idle["num_preemptions_total"] - warm_metrics["num_preemptions_total"],
        "aborted": idle[ABORTED] - warm_metrics[ABORTED],
        "kv_blocks": int(start_metrics["num_free_kv_blocks"]),
        "blocks_leaked": leaked,
        "idle": {k: idle[k] for k in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")},
        "server_tracebacks": tracebacks,
        "exit_code": exit_code,
    }
    unanswered = warm.unanswered + soak.unanswered
    answered = warm.answered + soak.answered
    checks = {
        "no_5xx": check(
            count_5xx(warm.statuses + soak.statuses) == 0 and count_5xx(all_statuses) == 0,
            f"clients saw {count_5xx(warm.statuses + soak.statuses)}, the server logged {count_5xx(all_statuses)}",
        ),
        "every_valid_request_answered": check(
            unanswered == 0 and answered > 0, f"{answered} answered in full, {unanswered} not"
        ),
        "bad_inputs_refused_properly": check(
            warm.wrong_errors + soak.wrong_errors == 0,
            f"{sum(soak.bad_inputs.values()) + sum(warm.bad_inputs.values())} tried, "
            f"{warm.wrong_errors + soak.wrong_errors} answered otherwise than expected",
        ),
        "texts_equal_alone": check(bad_texts == 0, f"{bad_texts} of {answered} answers differ from alone"),
        "idle_after": check(
            idle["num_requests_running"] == 0 and idle["num_requests_waiting"] == 0,
            f"running {idle['num_requests_running']:g}, waiting {idle['num_requests_waiting']:g}",
        ),
        "no_kv_blocks_leaked": check(
            leaked == 0 and idle["kv_cache_usage_perc"] == 0,
            f"{leaked} blocks in use, usage {idle['kv_cache_usage_perc']:g}",
        ),
        "rss_within_tolerance": check(
            abs(rss_after / rss_warm - 1) <= cfg.rss_tolerance,
            f"{rss_after / 1024:.1f} MiB after, {rss_warm / 1024:.1f} MiB after warm-up "
            f"({(rss_after / rss_warm - 1) * 100:+.1f}%, limit {cfg.rss_tolerance * 100:.0f}%)",
        ),
        "no_tracebacks": check(tracebacks == 0, f"{tracebacks} tracebacks in the server log"),
        "clean_exit": check(exit_code == 0, f"exit code {exit_code} after SIGTERM"),
    }
    return {
        "kind": "soak",
        "command": command,
        "meta": {**machine(), "model": cfg.model or "embedded", "serve_command": shlex.join(server.command)},
        "config": {k: v for k, v in vars(cfg).items()},
        "figures": figures,
        "warmup": {**tally_figures(warm), "seconds": cfg.warmup, "rss_mib": rss_warm / 1024},
        "checks": checks,
        "ok": all(c["ok"] for c in checks.values()),
        "failures": warm.failures + soak.failures,
        "mismatch_examples": examples,
    }


def _phase(
    server: SoakServer, cfg: SoakConfig, pool: list[ValidRequest], bad: list, seconds: float, seed: int
) -> Tally:
    async def go() -> Tally:
        limits = httpx.Limits(max_connections=cfg.clients * 2, max_keepalive_connections=cfg.clients)
        timeout = httpx.Timeout(cfg.timeout, connect=60.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            clients = Clients(server.url, server.headers, http, pool, bad, SERVED, cfg.timeout)
            await clients.run(cfg.clients, seconds, seed)
            return clients.tally

    return asyncio.run(go())


def _settle(server: SoakServer) -> tuple[dict[str, float], int]:
    """/metrics once idle, and the RSS a second later (the last aborts are freed between steps)."""
    server.wait_idle()
    time.sleep(1.0)
    return server.wait_idle(), server.status_kib("VmRSS")


def _alone(server: SoakServer, pool: list[ValidRequest], timeout: float) -> dict[str, tuple[str, ...]]:
    """Each distinct request alone, one at a time, with its own cache salt: its texts."""
    texts = {}
    with httpx.Client(timeout=timeout, headers=server.headers) as http:
        for request in pool:
            r = http.post(server.url + request.path, json=request.json(False, cache_salt=REFERENCE_SALT))
            r.raise_for_status()
            texts[request.key] = tuple(answer_texts(request.path, r.json()))
    return texts


class RssPeak:
    """The server's RSS polled every 0.2 s on a thread while the soak runs: its peak, and VmHWM at the end."""

    def __init__(self, server: SoakServer) -> None:
        self.server, self.kib, self.hwm_kib = server, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.kib = max(self.kib, self.server.status_kib("VmRSS"))

    def __enter__(self) -> RssPeak:
        self.kib = self.server.status_kib("VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.kib = max(self.kib, self.server.status_kib("VmRSS"))
        self.hwm_kib = self.server.status_kib("VmHWM")


def parse_args(argv: list[str]) -> tuple[SoakConfig, Path | None]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=None, help="model for `mistralpy serve -m` (default: the embedded one)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of soak (default 60)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of the same load before it (default 10)")
    p.add_argument("--clients", type=int, default=128, help="concurrent clients (default 128)")
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"distinct prompts (default {len(PROMPTS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve-args", default="", help="more `mistralpy serve` flags, one string")
    p.add_argument("--out", type=Path, default=None, help="report file (default benchmarks/results/soak-DATE.json)")
    a = p.parse_args(argv)
    if not 1 <= a.prompts <= len(PROMPTS):
        p.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    cfg = SoakConfig(a.model, a.duration, a.warmup, a.clients, a.prompts, a.seed, serve_args=shlex.split(a.serve_args))
    return cfg, a.out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg, out = parse_args(argv)
    report = run_soak(cfg, shlex.join(["python", "-m", "benchmarks.soak", *argv]))
    path = write_report(report, out, "soak")
    print_checks(report)
    print(f"report: {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
