"""A live `mistralpy serve` subprocess for the server tests: a free port, readiness on /health, always killed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

KEY = "sk-test"
MODEL = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mistralpy", "serve", "--port", str(self.port), "--log-level", "warning", *args]
        self._output = ""
        self.log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server
        self.proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, str]:
        """Signal the server and wait; kill it if it does not exit. Returns (exit code, its output)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self._output = self.output()
            self.log.close()
        return self.proc.returncode, self._output


def start_test_server(gguf_path) -> ServerProcess:
    """The server the tests share: the tiny model in float32 (exact greedy repeats), an API key, 8 sequences."""
    args = ("-m", str(gguf_path), "--dtype", "float32", "--served-model-name", MODEL, "--max-num-seqs", "8")
    proc = ServerProcess(*args, "--api-key", KEY)
    try:
        return proc.wait_ready()
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise


def http(
    server, method: str, path: str, key: str | None = KEY, timeout: float = 30, headers=None, **kw
) -> httpx.Response:
    headers = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=timeout, **kw)


def metrics(server) -> dict[str, float]:
    text = http(server, "GET", "/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r"^mistralpy:(\S+) (\S+)$", text, re.M)}
