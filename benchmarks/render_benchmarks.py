"""Render docs/BENCHMARKS.md from a `mistralpy bench --json` result file.

Usage: python benchmarks/render_benchmarks.py benchmarks/results/bench-DATE.json "<the exact bench command>"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def render(report: dict, command: str) -> str:
    meta, results = report["meta"], report["results"]
    ours = {r["test"]: r["tok_per_s"] for r in results if r["backend"] == "mistralpy"}
    lines = [
        "# Benchmarks",
        "",
        f"Measured {meta['date']} on this project's machine ({meta['machine']}, {meta['threads']} threads, "
        f"torch {meta['torch']}), mistralpy {meta['mistralpy']}, model `{Path(meta['model']).name}`, "
        f"{meta['repetitions']} timed runs per test after a warm-up. Peers ran in the same process run, on the same "
        "file; ratios are only meaningful within one run (these shared machines move 10-30% between runs).",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Tests: `ppN` = prompt processing of N tokens (prompt tok/s), `tgN` = generating N tokens for one request "
        "(tok/s), `cK ppP+tgN` = K concurrent requests of P prompt + N generated tokens (aggregate generated tok/s; "
        "c1 is one such request alone; transformers runs K requests as one static batch; "
        "llama-cpp-python has no in-process batching, so it runs c1 only).",
        "",
        "| test | mistralpy | llama.cpp | transformers | mistralpy / llama.cpp | mistralpy / transformers |",
        "|---|---|---|---|---|---|",
    ]
    by_test: dict[str, dict[str, dict]] = {}
    for r in results:
        by_test.setdefault(r["test"], {})[r["backend"]] = r

    def cell(row: dict | None) -> str:
        return f"{row['tok_per_s']:.1f} ± {row['tok_per_s_std']:.1f}" if row else "n/a"

    def ratio(test: str, row: dict | None) -> str:
        return f"{ours[test] / row['tok_per_s']:.2f}x" if row and test in ours else "n/a"

    for test, rows in by_test.items():
        llama, hf = rows.get("llama.cpp"), rows.get("transformers")
        lines.append(
            f"| {test} | {cell(rows.get('mistralpy'))} | {cell(llama)} | {cell(hf)} | {ratio(test, llama)} "
            f"| {ratio(test, hf)} |"
        )
    dtypes = sorted({f"{r['backend']}: {r['dtype']}" for r in results})
    lines += ["", f"Compute dtypes: {', '.join(dtypes)}.", ""]
    return "\n".join(lines)


def main() -> None:
    path, command = Path(sys.argv[1]), sys.argv[2]
    report = json.loads(path.read_text())
    body = render(report, command)
    notes = ROOT / "benchmarks" / "NOTES.md"
    if notes.is_file():
        body += "\n" + notes.read_text()
    (ROOT / "docs" / "BENCHMARKS.md").write_text(body)


if __name__ == "__main__":
    main()
