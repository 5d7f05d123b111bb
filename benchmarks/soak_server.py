"""A `mistralpy serve` process for the reliability runs (soak, KV exhaustion): started on a free port of 127.0.0.1
with its access log in a file, its memory read from /proc, its /metrics parsed, its log searched afterwards."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx

API_KEY = "sk-soak"
ACCESS_LINE = re.compile(r'^INFO mistralpy\.access: \S+ "(\S+) (\S+)" (\d{3}) ', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SoakServer:
    """`python -m mistralpy serve -m MODEL ARGS` with an API key (given in the environment, not on the command line)
    and the access log on (one line per request with its status, 499 for a client gone before its answer)."""

    def __init__(self, model: str | None, args: Sequence[str] = (), api_key: str | None = API_KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        model_args = ["-m", model] if model else []
        self.args = [*model_args, *args]
        self.command = [sys.executable, "-m", "mistralpy", "serve", "--port", str(self.port), "--log-level", "info"]
        self.command += self.args
        env = {k: v for k, v in os.environ.items() if k != "MISTRALPY_API_KEY"}
        if api_key:
            env["MISTRALPY_API_KEY"] = api_key
        self.log_path = Path(tempfile.mkstemp(prefix="soak-server-", suffix=".log")[1])
        self._log = self.log_path.open("w")  # a file, not a pipe: a full pipe would block the server
        self.proc = subprocess.Popen(self.command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def wait_ready(self, timeout: float = 600.0) -> SoakServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status_kib(self, key: str) -> int:
        """A /proc/<pid>/status figure in KiB: VmRSS (resident now) or VmHWM (the resident peak so far)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(f"{key}:"))

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=30).text
        return {m[1]: float(m[2]) for m in re.finditer(r"^mistralpy:(\S+) (\S+)$", text, re.M)}

    def wait_idle(self, timeout: float = 120.0) -> dict[str, float]:
        """/metrics once no request is running or waiting (the engine frees blocks as it sees aborts)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            idle = m["num_requests_running"] == 0 and m["num_requests_waiting"] == 0
            if idle or time.monotonic() > deadline:
                return m
            time.sleep(0.2)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def access_statuses(self, log: str) -> Counter[int]:
        """Status codes in (part of) the server's log: also those of requests whose client left before reading them."""
        return Counter(int(m[3]) for m in ACCESS_LINE.finditer(log))

    def tracebacks(self) -> int:
        return self.log().count("Traceback (most recent call last)")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 30 s; the exit code. The log file is kept until `remove_log`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def remove_log(self) -> None:
        self.log_path.unlink(missing_ok=True)
