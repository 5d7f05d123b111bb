"""`mistralpy bench --embed`: texts/s of mistralpy and sentence-transformers in one run, as JSON or a table; the
other tests' options refused. (Speeds are reported, never asserted.)"""

from __future__ import annotations

import json

import pytest

from mistralpy.bench.embed import EmbedResult, format_embed_table

from .test_bench import run_cli


@pytest.mark.slow  # a process loading torch, sentence-transformers and both models: ~30 s even on a quiet machine
def test_bench_embed_json():
    out = run_cli("bench", "--embed", "6", "-r", "1", "-t", "1", "--dtype", "float32", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    embed = report["embed"]
    assert embed["texts"] == 6 and report["meta"]["dtype"] == "float32"
    assert embed["mistralpy_texts_per_s"] > 0 and embed["sentence_transformers_texts_per_s"] > 0
    assert abs(embed["ratio"] - embed["mistralpy_texts_per_s"] / embed["sentence_transformers_texts_per_s"]) < 0.02


def test_bench_embed_table_and_refusals():
    table = format_embed_table(EmbedResult(256, 30.0, 12.0), "bfloat16")
    assert "| mistralpy | bfloat16 | 256 | 30.0 |" in table and "ratio: 2.50x" in table
    bad = run_cli("bench", "--embed", "-p", "16")
    assert bad.returncode == 1 and "-p/--n-prompt do not apply to --embed" in bad.stderr
