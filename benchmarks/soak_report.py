"""The reliability runs' JSON reports: where they run, checks as (ok, detail) pairs, and the file they go to."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any

from .soak_clients import Tally

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    import mistralpy

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "unknown")
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus ({cpu})",
        "load_average_at_start": list(os.getloadavg()),
        "torch": torch.__version__,
        "mistralpy": mistralpy.__version__,
        "python": platform.python_version(),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": bool(ok), "detail": detail}


def mismatches(tallies: list[Tally], reference: dict[str, tuple[str, ...]]) -> tuple[int, list[str]]:
    """Answers whose texts differ from the same request's answer alone; a few examples."""
    count, examples = 0, []
    for tally in tallies:
        for key, seen in tally.texts.items():
            for texts, n in seen.items():
                if texts != reference[key]:
                    count += n
                    if len(examples) < 10:
                        examples.append(f"{key}: got {texts!r}, alone {reference[key]!r}")
    return count, examples


def tally_figures(tally: Tally) -> dict[str, Any]:
    return {
        "requests": dict(sorted(tally.requests.items())),
        "requests_total": sum(tally.requests.values()),
        "valid_answered": tally.answered,
        "unanswered": tally.unanswered,
        "faults": dict(sorted(tally.faults.items())),
        "faults_total": sum(tally.faults.values()),
        "bad_inputs": dict(sorted(tally.bad_inputs.items())),
        "bad_inputs_total": sum(tally.bad_inputs.values()),
        "bad_input_kinds": len(tally.bad_inputs),
        "wrong_errors": tally.wrong_errors,
        "status_codes": dict(sorted(tally.statuses.items())),
    }


def count_5xx(statuses: Counter) -> int:
    return sum(n for code, n in statuses.items() if str(code).isdigit() and int(code) >= 500)


def write_report(report: dict[str, Any], out: Path | None, prefix: str) -> Path:
    if out is None:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{prefix}-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return out


def print_checks(report: dict[str, Any]) -> None:
    for name, result in report["checks"].items():
        print(f"{'ok  ' if result['ok'] else 'FAIL'} {name}: {result['detail']}")
