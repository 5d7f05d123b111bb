"""`mistralpy serve` against hostile clients and client faults, over raw sockets: a request without a valid key is
answered from its headers alone, a client hanging up mid-body leaves no 500 and no traceback, the body-size and
request-token flags, and SIGTERM during 16 streams."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time

import httpx
import pytest

from .server_process import KEY, MODEL, ServerProcess, http

MAX_BODY = 2_000_000
MAX_TOKENS = 2048


@pytest.fixture(scope="module")
def edge(tiny_llama):
    """A server with an API key, access lines in its log, and its own body-size and request-token limits."""
    proc = ServerProcess(
        "-m", str(tiny_llama[2]), "--dtype", "float32", "--served-model-name", MODEL, "--api-key", KEY,
        "--log-level", "info", "--max-body-bytes", str(MAX_BODY), "--max-request-tokens", str(MAX_TOKENS),
    )  # fmt: skip
    try:
        yield proc.wait_ready()
    finally:
        proc.stop(signal.SIGKILL)


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)  # a server waiting for a body that never comes fails the test instead of hanging it
    return sock


def head(path: str, *lines: str) -> bytes:
    return "\r\n".join(
        [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *lines, "", ""]
    ).encode()


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP response with a Content-Length: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    header, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", header).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(header.split()[1]), body


@pytest.mark.parametrize("announced", [50_000_000, 1_500_000, "chunked"])
def test_no_key_is_a_401_from_the_headers_alone(edge, announced):
    """Over the body limit, under it, or of unknown size: the 401 comes without a byte of the body sent, and the
    server closes the connection rather than read what was announced."""
    length = "Transfer-Encoding: chunked" if announced == "chunked" else f"Content-Length: {announced}"
    with connect(edge) as sock:
        sock.sendall(head("/v1/chat/completions", length, "Authorization: Bearer sk-wrong"))
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 401 "), response[:200]
    assert json.loads(response.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_api_key"


def test_no_key_with_a_small_body_keeps_the_connection(edge):
    """A small announced body: the 401 still comes before the body is sent; the connection then stays usable."""
    body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    with connect(edge) as sock:
        sock.sendall(head("/v1/completions", f"Content-Length: {len(body)}"))
        assert read_response(sock)[0] == 401
        sock.sendall(body + head("/v1/completions", f"Content-Length: {len(body)}", f"Authorization: Bearer {KEY}"))
        sock.sendall(body)
        status, answer = read_response(sock)
    assert status == 200 and json.loads(answer)["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(edge, scheme):
    assert httpx.get(f"{edge.url}/v1/models", headers={"Authorization": f"{scheme} {KEY}"}).status_code == 200
    assert httpx.get(f"{edge.url}/v1/models", headers={"Authorization": f"{scheme} {KEY}x"}).status_code == 401
    assert httpx.get(f"{edge.url}/v1/models", headers={"Authorization": f"Basic {KEY}"}).status_code == 401


def test_clients_hanging_up_mid_body_leave_no_500_and_no_traceback(edge):
    auth = f"Authorization: Bearer {KEY}"
    body = json.dumps({"prompt": "Hello", "max_tokens": 300, "ignore_eos": True}).encode()
    faults = [
        head("/v1/completions", auth, "Content-Length: 1000") + b'{"prompt": "Hel',  # half the body, then gone
        head("/v1/chat/completions", auth, "Transfer-Encoding: chunked") + b"10\r\n" + b"{" * 16 + b"\r\n",  # ditto
        head("/v1/completions", auth, "Content-Length: 1000"),  # headers only
        head("/v1/completions", auth, f"Content-Length: {len(body)}") + body,  # the whole body, gone before the answer
    ]
    before = edge.output()
    for raw in faults:
        with connect(edge) as sock:
            sock.sendall(raw)
            time.sleep(0.2)  # the server is reading the body (or generating) when the client goes
    deadline = time.monotonic() + 10
    while edge.output()[len(before) :].count('" 499 ') < len(faults) and time.monotonic() < deadline:
        time.sleep(0.1)
    r = http(edge, "POST", "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    log = edge.output()[len(before) :]
    access = [line for line in log.splitlines() if "mistralpy.access" in line]
    assert sum('" 499 ' in line for line in access) == len(faults), access
    assert "Traceback" not in edge.output() and not any('" 500 ' in line for line in access), log


def test_body_size_and_request_token_flags(edge):
    ok = json.dumps({"prompt": [5] * 8, "max_tokens": 1}).encode()
    for size, status in ((MAX_BODY, 200), (MAX_BODY + 1, 413)):
        r = http(edge, "POST", "/v1/completions", content=ok.ljust(size), headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
    assert f"the limit is {MAX_BODY} (max_body_bytes)" in r.json()["error"]["message"]
    per_prompt = MAX_TOKENS // 8  # prompt tokens x n: at the limit, then one prompt token over it
    for prompt, status in (([5] * per_prompt, 200), ([5] * (per_prompt + 1), 400)):
        r = http(edge, "POST", "/v1/completions", json={"prompt": prompt, "n": 8, "max_tokens": 1})
        assert r.status_code == status, r.text
    error = r.json()["error"]
    limit = f"the limit is {MAX_TOKENS} (max_request_tokens)"
    assert error["message"] == f"the request has {8 * (per_prompt + 1)} prompt tokens x n; {limit}"
    assert (error["param"], error["code"]) == ("prompt", "limit_exceeded")


def test_models_root_is_the_file_name_only(edge, tiny_llama):
    assert http(edge, "GET", "/v1/models").json()["data"][0]["root"] == tiny_llama[2].name


def test_sigterm_ends_every_stream_with_an_error_event_then_done(tiny_llama):
    proc = ServerProcess("-m", str(tiny_llama[2]), "--dtype", "float32", "--max-num-seqs", "16", "--log-level", "info")
    num_streams, started = 16, threading.Semaphore(0)
    events: list[list[str]] = [[] for _ in range(num_streams)]
    body = {"prompt": "Hi", "max_tokens": 500, "ignore_eos": True, "stream": True}

    def stream(i: int) -> None:
        with httpx.stream("POST", f"{proc.url}/v1/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line:
                    events[i].append(line)
                    if len(events[i]) == 1:
                        started.release()

    try:
        proc.wait_ready()
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(num_streams)]
        for t in threads:
            t.start()
        assert all(started.acquire(timeout=30) for _ in range(num_streams))  # every stream is in flight
        sent = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(timeout=15)
        took = time.monotonic() - sent
        for t in threads:
            t.join(timeout=15)
        code, output = proc.stop()
    finally:
        proc.stop(signal.SIGKILL)
    assert code == 0 and took < 5, (code, took)
    for lines in events:
        assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
        error = json.loads(lines[-2].removeprefix("data: "))["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
        assert error["message"] == "the server is shutting down"
        assert len(lines) < 2 + body["max_tokens"]  # cut short: not every token came
    assert "Traceback" not in output, output
