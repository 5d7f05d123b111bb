"""Fuzz the model loader with mutated GGUF files (and legacy GGML files): every load must end in success or in a
MistralpyError of one short line, within 10 s, printing no traceback, without crashing the process, and with its peak
memory growing no more than the file's size justifies.

The seed files are tiny valid Llamas (tests/fuzz/files.py). The mutations (tests/fuzz/mutations.py) change the
header, metadata and tensor-directory regions field by field and entry by entry, cut the file at every region
boundary and make random byte edits there. A fixed seed picks DEFAULT_CASES of them; MISTRALPY_FUZZ_CASES=5000 runs
more (every structured mutation once the number allows), MISTRALPY_FUZZ_SEED another seed. The cases run in a worker
process (tests/fuzz/worker.py): a crash or a hang is reported with the case's index, seed and mutation.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from .fuzz.files import BASES, write_bases
from .fuzz.harness import FuzzRun, judge, run
from .fuzz.worker import MODES, load

DEFAULT_CASES = 600


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    write_bases(folder)
    return folder


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("base", BASES)
def test_seed_files_load(seed_files, base, mode):
    """The unmutated files load and run a step: otherwise every case could fail for the same reason."""
    load(seed_files / BASES[base][0], mode)


def test_fuzz_gguf_loader(seed_files):
    cases = int(os.environ.get("MISTRALPY_FUZZ_CASES", DEFAULT_CASES))
    seed = int(os.environ.get("MISTRALPY_FUZZ_SEED", 0))
    report = run(FuzzRun(seed_files, seed, cases))
    assert len(report.results) == cases
    assert not report.findings, f"{len(report.findings)} of {cases} cases failed:\n" + "\n".join(report.findings[:20])
    # The mutations reach every stage of a load, not only the header's first checks: some files still load, and
    # the errors come from the header, the metadata, the tokenizer and the weights.
    messages = Counter(_stage(r.get("msg", "")) for r in report.results if r["outcome"] == "error")
    assert report.count("ok") > 0
    assert {"header", "metadata", "tokenizer", "weights"} <= set(messages), messages


def _stage(message: str) -> str:
    if "corrupt GGUF file" in message or "corrupt GGML file" in message or "not a GG" in message:
        return "header"
    if "tokenizer" in message:
        return "tokenizer"
    if "invalid model metadata" in message:
        return "metadata"
    if "tensor" in message or "weights" in message or "parts of" in message:
        return "weights"
    return "other"


def test_harness_reports_each_kind_of_failure(seed_files):
    """The harness itself: a crash (abort), a hang, a non-mistralpy exception and a printed traceback are each
    reported with their case, and the cases after a crash or a hang still run."""
    faults = {1: "raise", 2: "abort", 4: "print", 5: "hang"}
    spec = ",".join(f"{i}:{kind}" for i, kind in faults.items())
    report = run(FuzzRun(seed_files, 0, 6, timeout=2.0, faults=spec, warm_up=False))
    assert [r["start"] for r in report.results] == list(range(6))
    assert report.restarts == 2
    found = {int(f.split()[1]): f for f in report.findings}
    assert sorted(found) == sorted(faults)
    assert "raised builtins.ValueError: a raise fault" in found[1]
    assert "signal SIGABRT" in found[2]
    assert "printed:" in found[4] and "Traceback" in found[4]
    assert "no result within 2.0 s" in found[5]


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"msg": "line one\nline two"}, "not one short line"),
        ({"msg": "x" * 400}, "not one short line"),
        ({"rss_growth_kib": 200 << 10}, "peak memory grew 200 MiB"),
        ({"seconds": 11.0}, "took 11.0 s"),
        ({"output": "thread '<unnamed>' panicked at src/lib.rs"}, "printed"),
        ({"mistralpy": False, "type": "builtins.TypeError"}, "raised builtins.TypeError"),
    ],
)
def test_judge(change, problem):
    case = {"outcome": "error", "mistralpy": True, "type": "mistralpy.errors.ModelLoadError", "msg": "bad file",
            "output": "", "seconds": 0.1, "size": 20000, "rss_growth_kib": 1024}  # fmt: skip
    assert judge(case) is None
    assert problem in judge({**case, **change})
