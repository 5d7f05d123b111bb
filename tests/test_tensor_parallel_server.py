"""`mistralpy serve --tensor-parallel-size 2` in a subprocess: one chat request over HTTP answered as one process
answers it; then a worker killed ends the server (it exits, its log naming the worker) rather than leaving it up."""

from __future__ import annotations

import signal

import psutil
import pytest

from mistralpy import LLM, SamplingParams

from .server_process import KEY, MODEL, ServerProcess, http

MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def tp_server(tiny_llama):
    args = ("-m", str(tiny_llama[2]), "--dtype", "float32", "--served-model-name", MODEL, "--api-key", KEY)
    proc = ServerProcess(*args, "--tensor-parallel-size", "2")
    try:
        yield proc.wait_ready(timeout=180)
    finally:
        proc.stop(signal.SIGKILL)


def _worker(server: ServerProcess) -> psutil.Process:
    commands = {c: _cmdline(c) for c in psutil.Process(server.proc.pid).children()}
    workers = [c for c, cmd in commands.items() if "spawn_main" in cmd and "resource_tracker" not in cmd]
    assert len(workers) == 1, list(commands.values())
    return workers[0]


def _cmdline(child: psutil.Process) -> str:
    """The child's command line; empty for one that has exited but is not reaped yet (a CI run met such a zombie)."""
    try:
        return " ".join(child.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def test_chat_then_dead_worker_ends_server(tp_server, tiny_llama):
    expected = LLM(str(tiny_llama[2]), dtype="float32", num_threads=1).chat(
        MESSAGES, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    )[0]
    body = {"model": MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 8, "ignore_eos": True}
    reply = http(tp_server, "POST", "/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == expected.outputs[0].text

    _worker(tp_server).kill()
    code = tp_server.proc.wait(timeout=60)
    output = tp_server.output()
    assert "tensor-parallel worker rank 1" in output and "exited with code -9" in output, output[-2000:]
    assert code is not None
