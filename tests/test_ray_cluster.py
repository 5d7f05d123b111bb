"""docs/DEPLOYMENT.md's Ray cluster guide, run on this machine: a head and a second node (`ray start`, one CPU each,
their own temp dir so that no other process's `ray.init()` finds this cluster), then `mistralpy serve --replicas 2
--ray-address`. One chat request gets the model's greedy answer (one process's engine the oracle), and Ray's actor
table puts the two engine replicas on the two nodes. Every process the test starts is killed by its id."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import httpx
import psutil
import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.cli import build_parser
from mistralpy.distributed.cli import check_replica_flags, placement_options
from mistralpy.errors import InvalidRequestError

from .server_process import free_port

MESSAGES = [{"role": "user", "content": "Name a colour."}]
GREEDY = dict(temperature=0, max_tokens=8, ignore_eos=True)
WHERE = """
import json, sys, ray
from ray._private.state import actors
ray.init(address=sys.argv[1], logging_level="ERROR")
print(json.dumps({"nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]], "replicas": [a["Address"]["NodeID"]
    for a in actors().values() if a["State"] == "ALIVE" and a["ActorClassName"].endswith("EngineReplica")]}))
"""


def _ray(env: dict, *args: str) -> None:
    done = subprocess.run(["ray", "start", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _ports() -> tuple[str, ...]:
    """A node's ports that default to fixed numbers, free ones instead: two nodes, and any other Ray on the host."""
    return ("--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()))


def _kill_cluster(temp_dir: str) -> None:
    """The cluster's daemons: every process whose command line names its temp dir, and their children."""
    mine = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
    for proc in [child for p in mine for child in p.children(recursive=True)] + mine:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
def test_two_node_cluster_serves_replicas_on_both_nodes(tiny_llama):
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths live under it
    # token authentication (Ray 2.60) needs the cluster's token on every node: one made here, as the guide's
    # `ray get-auth-token --generate` makes one (a machine without ~/.ray/auth_token has none)
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": os.getcwd()}
    address, port = f"127.0.0.1:{free_port()}", free_port()
    serve, log = None, tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server
    try:
        common = ("--num-cpus", "1", "--temp-dir", temp_dir, "--disable-usage-stats")
        _ray(env, "--head", "--port", address.split(":")[1], "--include-dashboard=false", *common, *_ports(),
             "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()))  # fmt: skip
        _ray(env, "--address", address, *common, *_ports())
        cmd = [sys.executable, "-m", "mistralpy", "serve", "--replicas", "2", "--ray-address", address, "--port",
               str(port), "-m", str(tiny_llama[2]), "--dtype", "float32", "--kv-cache-tokens", "512",
               "--max-replicas-per-node", "1"]  # fmt: skip
        serve = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline, reply = time.monotonic() + 180, None
        while time.monotonic() < deadline and serve.poll() is None:
            try:
                body = {"messages": MESSAGES, **GREEDY}
                reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60)
                if reply.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        log.seek(0)
        assert reply is not None and reply.status_code == 200, log.read()[-3000:]
        expected = LLM(str(tiny_llama[2]), dtype="float32", num_threads=1).chat(MESSAGES, SamplingParams(**GREEDY))
        assert reply.json()["choices"][0]["message"]["content"] == expected[0].outputs[0].text

        where = subprocess.run([sys.executable, "-c", WHERE, address], env=env, capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        placed = json.loads(where.stdout.strip().splitlines()[-1])
        assert len(placed["nodes"]) == 2
        assert sorted(placed["replicas"]) == sorted(placed["nodes"])  # one replica on each node
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.wait()
        _kill_cluster(temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_max_replicas_per_node_flag():
    def args(*extra: str):
        return build_parser().parse_args(["serve", *extra])

    assert placement_options(args("--replicas", "2", "--max-replicas-per-node", "1")) == {"max_replicas_per_node": 1}
    assert placement_options(args("--replicas", "2")) == {}
    with pytest.raises(InvalidRequestError, match="need --replicas"):
        check_replica_flags(args("--max-replicas-per-node", "1"))
    with pytest.raises(InvalidRequestError, match="must be >= 1"):
        check_replica_flags(args("--replicas", "2", "--max-replicas-per-node", "0"))
