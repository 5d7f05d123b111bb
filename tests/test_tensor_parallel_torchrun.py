"""Two "nodes" on this machine: `torchrun --nnodes 2 --nproc-per-node 1 --node-rank K -m mistralpy serve
--tensor-parallel-size 2` started twice (node ranks 0 and 1, a localhost master). Rank 0's server answers a greedy
chat request as one process answers it (the embedded model's float weights, float32: see
test_tensor_parallel_engine.py); killing node 1 (its torchrun agent and its rank) ends the server with that rank's
error, node 0's torchrun exiting non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import httpx
import psutil

from mistralpy import LLM, SamplingParams

from .server_process import free_port

MESSAGES = [{"role": "user", "content": "Name a colour."}]
GREEDY = dict(temperature=0, max_tokens=8, ignore_eos=True)
OPTIONS = dict(dtype="float32", weights="dequantized", max_model_len=128, kv_cache_tokens=256)


def _node(node_rank: int, master_port: int, http_port: int) -> tuple[subprocess.Popen, object]:
    serve = [
        "-m", "mistralpy", "serve", "--tensor-parallel-size", "2", "--dtype", "float32", "--weights", "dequantized",
        "--max-model-len", "128", "--kv-cache-tokens", "256", "--port", str(http_port), "--log-level", "warning",
    ]  # fmt: skip
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(master_port),
    ]  # fmt: skip
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([*launch, *serve], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _output(log) -> str:
    log.seek(0)
    return log.read()


def _wait_ready(url: str, nodes: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in nodes:
            assert proc.poll() is None, _output(log)[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("the torchrun server did not become ready: " + _output(nodes[0][1])[-3000:])


def test_two_nodes_serve_then_a_lost_node_ends_the_server():
    master, port = free_port(), free_port()
    nodes = [_node(rank, master, port) for rank in (0, 1)]
    try:
        _wait_ready(f"http://127.0.0.1:{port}", nodes, timeout=300)
        body = {"messages": MESSAGES, **GREEDY}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        expected = LLM(num_threads=1, **OPTIONS).chat(MESSAGES, SamplingParams(**GREEDY))[0].outputs[0].text
        assert reply.json()["choices"][0]["message"]["content"] == expected

        agent = psutil.Process(nodes[1][0].pid)  # node 1 lost: its agent and its rank (in a session of its own)
        for proc in [agent, *agent.children(recursive=True)]:
            proc.kill()
        code = nodes[0][0].wait(timeout=90)
        output = _output(nodes[0][1])
        assert code != 0, output[-3000:]
        assert "tensor-parallel rank 1 (started by torchrun) is gone" in output, output[-3000:]
        assert "mistralpy: error: tensor-parallel rank 1" in output, output[-3000:]
    finally:
        for proc, log in nodes:
            if proc.poll() is None:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
            log.close()


def test_serve_refuses_a_world_of_another_size():
    world = "3"
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": world, "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(free_port())
    cmd = [sys.executable, "-m", "mistralpy", "serve", "--tensor-parallel-size", "2", "--port", str(free_port())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"torchrun started {world} ranks (WORLD_SIZE" in done.stderr and "must be equal" in done.stderr
