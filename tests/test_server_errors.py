"""`mistralpy serve` under bad input, without or with a wrong API key, and on SIGINT / SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import openai
import pytest

from .server_process import MODEL, ServerProcess, http, metrics

CHAT = [{"role": "user", "content": "Hello there"}]


CHAT_URL, COMPLETIONS_URL = "/v1/chat/completions", "/v1/completions"
BAD_REQUESTS = [  # (path, body, status, words the message must contain)
    (CHAT_URL, {"messages": "hi"}, 400, "messages"),
    (CHAT_URL, {"messages": []}, 400, "messages"),
    (CHAT_URL, {"messages": [{"role": "user"}]}, 400, "content"),
    (CHAT_URL, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    (CHAT_URL, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400, "image_url"),
    (CHAT_URL, {"messages": CHAT, "n": 0}, 400, "n"),
    (CHAT_URL, {"messages": CHAT, "n": "2"}, 400, "n"),
    (CHAT_URL, {"messages": CHAT, "temperature": -1}, 400, "temperature"),
    (CHAT_URL, {"messages": CHAT, "top_p": 2}, 400, "top_p"),
    (CHAT_URL, {"messages": CHAT, "max_tokens": 1000000}, 400, "1000000 512"),
    (CHAT_URL, {"messages": CHAT, "max_tokens": 0}, 400, "max_tokens"),
    (CHAT_URL, {"messages": CHAT, "logit_bias": {"abc": 1}}, 400, "logit_bias"),
    (CHAT_URL, {"messages": CHAT, "logit_bias": {"99999999": 1}}, 400, "logit_bias vocabulary"),
    (CHAT_URL, {"messages": CHAT, "logit_bias": {"5": 500}}, 400, "logit_bias"),
    (CHAT_URL, {"messages": CHAT, "tools": []}, 400, "tools"),
    (CHAT_URL, {"messages": CHAT, "model": "gpt-4"}, 404, "gpt-4"),
    (CHAT_URL, {"messages": CHAT, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    (CHAT_URL, {"messages": CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    (CHAT_URL, {"messages": CHAT, "stop": [1]}, 400, "stop"),
    (CHAT_URL, {"messages": CHAT, "presence_penalty": 3}, 400, "presence_penalty"),
    (CHAT_URL, {"messages": CHAT, "seed": "x"}, 400, "seed"),
    (CHAT_URL, b"not json", 400, "JSON"),
    (CHAT_URL, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "temperature finite"),
    (CHAT_URL, b"", 400, "body"),
    (CHAT_URL, b'{"messages": [}', 400, "not valid JSON"),
    (CHAT_URL, [1, 2], 400, "JSON object"),
    (COMPLETIONS_URL, {"prompt": []}, 400, "prompt"),
    (COMPLETIONS_URL, {"prompt": [1, "a"]}, 400, "prompt"),
    (COMPLETIONS_URL, {"prompt": [10**9]}, 400, "vocabulary"),
    (COMPLETIONS_URL, {"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    (COMPLETIONS_URL, {"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ("/detokenize", {"tokens": [-1]}, 400, "vocabulary"),
    ("/tokenize", {"prompt": "x", "messages": CHAT}, 400, "exactly one"),
    ("/v1/nowhere", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("path, body, status, words", BAD_REQUESTS)
def test_bad_input_is_a_clean_4xx(server, client, path, body, status, words):
    if isinstance(body, bytes):  # raw bytes: sent as JSON when they start like JSON
        kwargs = {"content": body, "headers": {"Content-Type": "application/json"} if body[:1] == b"{" else {}}
    else:
        kwargs = {"json": body}
    r = http(server, "POST", path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert all(word in error["message"] for word in words.split()), error["message"]
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=1).choices[0].finish_reason


def test_api_key(server, client):
    for key in (None, "sk-wrong"):
        r = http(server, "GET", "/v1/models", key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0).models.list()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_env_api_key_and_clean_shutdown(tiny_llama, sig):
    proc = ServerProcess("-m", str(tiny_llama[2]), "--shutdown-timeout", "30", env={"MISTRALPY_API_KEY": "sk-env"})
    try:
        proc.wait_ready()
        assert http(proc, "GET", "/v1/models", key="sk-env").json()["data"][0]["id"] == "default"
        assert http(proc, "GET", "/v1/models", key=None).status_code == 401
        body = {"prompt": "Hi", "max_tokens": 200, "ignore_eos": True, "stream": True}
        headers = {"Authorization": "Bearer sk-env"}
        with httpx.stream("POST", f"{proc.url}/v1/completions", json=body, headers=headers, timeout=30) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: {")
            proc.proc.send_signal(sig)  # --shutdown-timeout: an open stream may finish before the server exits
            events = [line for line in lines if line]
        proc.proc.wait(timeout=15)  # a second signal would force an unclean exit
        code, output = proc.stop(sig)
    finally:
        proc.stop(signal.SIGKILL)
    assert events[-1] == "data: [DONE]" and '"finish_reason": "length"' in events[-2]
    assert code == 0 and "Traceback" not in output, output


def test_a_rejected_prompt_aborts_the_admitted_ones(server):
    before = metrics(server)
    r = http(server, "POST", "/v1/completions", json={"prompt": [[1, 2], [3], [10**9]], "max_tokens": 400})
    assert r.status_code == 400 and "vocabulary" in r.json()["error"]["message"]
    after = metrics(server)
    assert after['request_finished_total{reason="abort"}'] == before['request_finished_total{reason="abort"}'] + 2
    assert after["num_requests_running"] == after["num_requests_waiting"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "/no/such/model.gguf"], "not found"),
        (["--port", "70000"], "--port"),
        (["--max-num-seqs", "0"], "max_num_seqs"),
        (["--max-body-bytes", "0"], "max_body_bytes must be a positive integer"),
        (["--max-request-tokens", "-5"], "max_request_tokens must be a positive integer"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout"),
    ],
)
def test_serve_startup_errors_are_one_line(args, message):
    out = subprocess.run(
        [sys.executable, "-m", "mistralpy", "serve", *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_serve_help():
    out = subprocess.run([sys.executable, "-m", "mistralpy", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--api-key",
        "--served-model-name",
        "--max-num-seqs",
        "--max-model-len",
        "--dtype",
        "--max-body-bytes",
        "--max-request-tokens",
        "--shutdown-timeout",
    ):
        assert flag in out.stdout
