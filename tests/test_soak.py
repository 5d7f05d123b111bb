"""The soak (benchmarks/soak.py) for 15 s against a real `mistralpy serve` of the tiny model: 128 clients with
hang-ups, bad inputs, missing keys and 1 MB bodies; every check of the soak must hold."""

from __future__ import annotations

from benchmarks.soak import SoakConfig, run_soak

SOAK_SECONDS = 15.0


def test_soak_15s_holds_every_check(tiny_llama):
    cfg = SoakConfig(
        model=str(tiny_llama[2]),
        duration=SOAK_SECONDS,
        warmup=3.0,
        clients=128,
        prompts=16,
        timeout=120.0,
        serve_args=["--dtype", "float32", "--max-num-seqs", "64"],
    )
    report = run_soak(cfg, "tests/test_soak.py")
    failed = {name: c["detail"] for name, c in report["checks"].items() if not c["ok"]}
    assert not failed, (failed, report["failures"][:10], report["mismatch_examples"][:5])
    figures = report["figures"]
    # The load and the faults really happened: otherwise the checks above would hold vacuously.
    assert figures["clients"] == 128 and figures["wall_s"] >= SOAK_SECONDS
    assert figures["valid_answered"] >= 128
    assert figures["faults"].get("mid_stream_hangup", 0) > 0 and figures["faults"].get("early_hangup", 0) > 0
    assert figures["faults"].get("big_body_prompt", 0) + report["warmup"]["faults"].get("big_body_prompt", 0) > 0
    assert figures["faults"].get("big_body_padded", 0) + report["warmup"]["faults"].get("big_body_padded", 0) > 0
    assert figures["bad_inputs_total"] > 0 and figures["server_status_codes"].get("499", 0) > 0
    assert figures["aborted"] > 0  # the hang-ups reached the engine as aborts, whose blocks came back
    assert figures["idle"] == {"num_requests_running": 0, "num_requests_waiting": 0, "kv_cache_usage_perc": 0}
