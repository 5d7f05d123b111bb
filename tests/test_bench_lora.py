"""`mistralpy bench --lora N` with tiny settings (in-process): the JSON report (both rates, their ratio, a hot-load
time); options of the other tests refused."""

from __future__ import annotations

import json

from mistralpy.cli import main


def test_bench_lora_json_and_errors(tiny_llama, capsys):
    args = ["bench", "-m", str(tiny_llama[2]), "--lora", "2", "--lora-rank", "4", "-n", "3", "--concurrency", "4"]
    assert main([*args, "-r", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["lora"]
    assert (report["requests"], report["adapters"], report["rank"], report["tokens"]) == (4, 2, 4, 3)
    assert report["base_tok_s"] > 0 and report["lora_tok_s"] > 0 and report["hot_load_s"] > 0
    assert abs(report["ratio"] - report["lora_tok_s"] / report["base_tok_s"]) < 1e-3
    assert main(["bench", "-m", str(tiny_llama[2]), "--lora", "2", "--compare", "llama-cpp"]) == 1
    assert "--compare do not apply to --lora" in capsys.readouterr().err
    assert main(["bench", "-m", str(tiny_llama[2]), "--lora", "0"]) == 1
    assert "nothing to run" in capsys.readouterr().err
