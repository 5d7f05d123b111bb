"""The /metrics text: Prometheus's exposition format, histograms with cumulative buckets (a bound is inclusive)."""

from __future__ import annotations

import re

from mistralpy.server.metrics import PREFIX, EngineSnapshot, Histogram, ServerMetrics, render, tag

LABEL = r'[a-z_]+="(?:[^"\\]|\\.)*"'  # a label: a value with the format's escapes
SAMPLE = re.compile(rf"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{{{LABEL}(,{LABEL})*\}})? -?[0-9.e+-]+$")


def test_histogram_buckets_are_cumulative_and_bounds_inclusive():
    h = Histogram("latency_seconds", "Latency.", buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    lines = render([[h.family("")]]).decode().splitlines()
    assert lines[:2] == [f"# HELP {PREFIX}latency_seconds Latency.", f"# TYPE {PREFIX}latency_seconds histogram"]
    assert lines[2:] == [
        f'{PREFIX}latency_seconds_bucket{{le="0.1"}} 2.0',
        f'{PREFIX}latency_seconds_bucket{{le="1.0"}} 4.0',
        f'{PREFIX}latency_seconds_bucket{{le="+Inf"}} 5.0',
        f"{PREFIX}latency_seconds_count 5.0",
        f"{PREFIX}latency_seconds_sum 8.65",
    ]


def test_every_line_is_a_comment_or_a_sample():
    metrics = ServerMetrics()
    metrics.on_first_token(0.03)
    snapshot = EngineSnapshot(running=2, kv_cache_usage=0.25, prefix_cache_queries=4, prefix_cache_hits=1,
                              grammar_compile_seconds=0.5, grammars_compiled=2, grammar_cache_hits=7,
                              finished={"stop": 3})  # fmt: skip
    text = metrics.render(snapshot).decode()
    lines = text.splitlines()
    assert text.endswith("\n") and all(line.startswith("# ") or SAMPLE.match(line) for line in lines), text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if not line.startswith("#")}
    assert values[f"{PREFIX}num_requests_running"] == 2 and values[f"{PREFIX}prefix_cache_hit_rate"] == 0.25
    assert values[f'{PREFIX}request_finished_total{{reason="stop"}}'] == 3
    assert values[f"{PREFIX}time_to_first_token_seconds_count"] == 1
    assert values[f"{PREFIX}grammar_compile_seconds_total"] == 0.5
    assert (values[f"{PREFIX}grammar_compiles_total"], values[f"{PREFIX}grammar_cache_hits_total"]) == (2, 7)
    types = [line.split()[3] for line in lines if line.startswith("# TYPE")]
    assert len(types) == len({line.split()[2] for line in lines if line.startswith("# TYPE")}) == 18
    assert set(types) == {"gauge", "counter", "histogram"}


def test_several_engines_share_each_header_and_label_their_samples():
    one, two = ServerMetrics(), ServerMetrics()
    two.on_finished(0.5)
    text = render([
        one.families(EngineSnapshot(running=1, finished={"stop": 2}), tag("model_name", "a")),
        two.families(EngineSnapshot(running=3), tag("model_name", 'b"\\')),
    ]).decode()  # fmt: skip
    lines = text.splitlines()
    assert all(line.startswith("# ") or SAMPLE.match(line) for line in lines), text
    headers = [line for line in lines if line.startswith("# TYPE")]
    assert len(headers) == len(set(headers)) == 18  # one header a metric, both engines' samples under it
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")}
    assert values[f'{PREFIX}num_requests_running{{model_name="a"}}'] == 1
    assert values[f'{PREFIX}num_requests_running{{model_name="b\\"\\\\"}}'] == 3  # the format's escapes
    assert values[f'{PREFIX}request_finished_total{{model_name="a",reason="stop"}}'] == 2
    assert values[f'{PREFIX}e2e_request_latency_seconds_count{{model_name="b\\"\\\\"}}'] == 1
    assert lines.index(f"# TYPE {PREFIX}num_requests_running gauge") + 1 == lines.index(
        f'{PREFIX}num_requests_running{{model_name="a"}} 1.0'
    )
