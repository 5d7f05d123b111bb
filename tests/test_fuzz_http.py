"""Property-based fuzz of the JSON routes' request bodies against the app in-process (httpx's ASGI transport, the
tiny model): whatever the body, the answer is never a 5xx, never a hang (each request is bounded by a timeout), an
error is an OpenAI error body, and a stream ends with [DONE]. Derandomized (a fixed seed) with
MISTRALPY_FUZZ_EXAMPLES examples per route family (default 60); set it higher for a longer hunt."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

EXAMPLES = int(os.environ.get("MISTRALPY_FUZZ_EXAMPLES", "60"))
REQUEST_TIMEOUT = 30.0  # a bounded request (max_model_len 128 on the tiny model) answers well within this
FUZZ = settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
ROUTES = ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "m", "\x00", "\ud800", "{{ 7*7 }}", "<|im_start|>", "user", "system", "text"]),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
roles = st.sampled_from(["user", "system", "assistant", "developer", "tool", "wizard", ""])
message = st.fixed_dictionaries(
    {"role": roles | json_values},
    optional={
        "content": st.text(max_size=60)
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}), max_size=3)
        | json_values,
        "name": json_values,
    },
)
FIELDS = ("model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "n", "stop", "seed",
          "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "stream", "stream_options",
          "logprobs", "top_logprobs", "echo", "min_tokens", "ignore_eos", "stop_token_ids", "skip_special_tokens",
          "include_stop_str_in_output", "cache_salt", "user", "prompt", "messages", "tokens", "add_generation_prompt",
          "add_special_tokens", "return_token_strs", "suffix", "tools", "response_format")  # fmt: skip
field_values = {
    "max_tokens": st.integers(-2, 8) | json_values,
    "max_completion_tokens": st.integers(-2, 8) | json_values,
    "n": st.integers(-1, 4) | json_values,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=20) | json_values,
    "logit_bias": st.dictionaries(
        st.text(max_size=8) | st.integers(-5, 70000).map(str), st.floats() | json_values, max_size=5
    )
    | json_values,  # fmt: skip
    "prompt": st.text(max_size=80)
    | st.lists(st.integers(-5, 70000), max_size=20)
    | st.lists(st.lists(st.integers(-5, 70000), max_size=5), max_size=3)
    | st.lists(st.text(max_size=10), max_size=3)
    | json_values,
    "messages": st.lists(message, max_size=4) | json_values,
    "tokens": st.lists(st.integers(-5, 70000) | json_values, max_size=10) | json_values,
    "stream": st.booleans() | json_values,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | json_values}) | json_values,
}
BASE = {"model": "m", "max_tokens": 4, "temperature": 0}


@st.composite
def structured_bodies(draw) -> bytes:
    """A plausible body: the usual fields, some of them replaced by anything and some dropped; max_tokens kept
    small or invalid so that a valid request stays short."""
    body = dict(BASE)
    body["prompt" if draw(st.booleans()) else "messages"] = draw(field_values["prompt"] | field_values["messages"])
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        body[name] = draw(field_values.get(name, json_values))
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = 4
    for name in draw(st.lists(st.sampled_from(sorted(body)), max_size=2, unique=True)):
        if name not in ("max_tokens", "max_completion_tokens"):
            del body[name]
    return json.dumps(body).encode()


raw_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"prompt": NaN, "max_tokens": 1}', b'{"a": 1e999}', b"\xff\xfe",
                     b'{"prompt": "x", "max_tokens": 1, "max_tokens": 2}', b'{"messages": [' * 5000]),
)  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_client(tiny_llama):
    loop = asyncio.new_event_loop()
    engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[2]), dtype="float32", max_model_len=128))
    transport = httpx.ASGITransport(app=create_app(engine, "m"), raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=REQUEST_TIMEOUT)
    try:
        yield loop, client
        idle = loop.run_until_complete(engine.call(lambda e: not e.has_unfinished_requests()))
        assert idle, "a fuzzed request was left in the engine"
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(engine.shutdown())
        loop.close()


def _send(fuzz_client, path: str, content: bytes, content_type: str = "application/json") -> None:
    loop, client = fuzz_client
    request = client.post(path, content=content, headers={"Content-Type": content_type})
    try:
        r = loop.run_until_complete(asyncio.wait_for(request, REQUEST_TIMEOUT))
    except asyncio.TimeoutError:
        pytest.fail(f"no answer within {REQUEST_TIMEOUT} s: {path} {content[:300]!r}")
    where = f"{path} {content[:300]!r} -> {r.status_code} {r.text[:500]}"
    assert r.status_code < 500, where
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), where
    elif r.headers["content-type"].startswith("text/event-stream"):
        events = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert events and events[-1] == "data: [DONE]", where
        assert all("error" not in json.loads(e[6:]) for e in events[:-1]), where  # a valid request streams fine
    else:
        r.json()


@FUZZ
@given(path=st.sampled_from(ROUTES), body=structured_bodies())
def test_structured_bodies_never_5xx_nor_hang(fuzz_client, path, body):
    _send(fuzz_client, path, body)


@FUZZ
@given(path=st.sampled_from(ROUTES), body=raw_bodies, content_type=st.sampled_from(["application/json", "text/plain"]))
def test_raw_bodies_never_5xx_nor_hang(fuzz_client, path, body, content_type):
    _send(fuzz_client, path, body, content_type)
