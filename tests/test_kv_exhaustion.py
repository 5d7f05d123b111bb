"""KV exhaustion against a real `mistralpy serve`: a pool sized for ~4 long requests receives 32 at once. Every one
finishes, its greedy text equals the same request's answer alone, and /metrics counts the preemptions it took."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

from .server_process import KEY, ServerProcess, http, metrics

POOL_TOKENS = 256  # 16 blocks of 16
PROMPT_TOKENS, MAX_TOKENS = 16, 48  # one request holds 4 blocks at its end: 4 fit in the pool
NUM_REQUESTS = 32


def _body(i: int, salt: str) -> dict:
    prompt = [(1000 + 37 * i + 11 * j) % 40000 + 100 for j in range(PROMPT_TOKENS)]  # distinct, no shared prefix
    return {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True, "cache_salt": salt}


def _complete(server: ServerProcess, body: dict) -> dict:
    r = http(server, "POST", "/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_32_long_requests_in_a_pool_for_4_all_finish_as_alone(tiny_llama):
    args = ("--max-model-len", str(POOL_TOKENS), "--kv-cache-tokens", str(POOL_TOKENS), "--max-num-seqs", "32")
    server = ServerProcess("-m", str(tiny_llama[2]), *args, "--api-key", KEY)
    try:
        server.wait_ready()
        before = metrics(server)
        assert before["num_free_kv_blocks"] == POOL_TOKENS // 16
        alone = [_complete(server, _body(i, "alone"))["text"] for i in range(NUM_REQUESTS)]
        assert metrics(server)["num_preemptions_total"] == before["num_preemptions_total"]  # one at a time fits
        with ThreadPoolExecutor(NUM_REQUESTS) as pool:
            together = list(pool.map(lambda i: _complete(server, _body(i, "together")), range(NUM_REQUESTS)))
        after = metrics(server)
        code, output = server.stop()
    finally:
        server.stop(signal.SIGKILL)
    assert [c["finish_reason"] for c in together] == ["length"] * NUM_REQUESTS
    mismatched = [i for i in range(NUM_REQUESTS) if together[i]["text"] != alone[i]]
    assert not mismatched, [(together[i]["text"], alone[i]) for i in mismatched[:3]]
    assert after["num_preemptions_total"] - before["num_preemptions_total"] > 0
    assert after["num_requests_running"] == after["num_requests_waiting"] == 0
    assert after["num_free_kv_blocks"] == before["num_free_kv_blocks"] and after["kv_cache_usage_perc"] == 0
    assert code == 0 and "Traceback" not in output, output
