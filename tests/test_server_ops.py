"""Operational behaviour of the app in-process: readiness while loading, metrics, request ids, access log,
body limit, CORS."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading

import pytest
from starlette.testclient import TestClient

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app
from mistralpy.server.limits import RequestLimits

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture
def make_engine(tiny_llama):
    return lambda: AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[2]), dtype="float32"))


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^mistralpy:{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_health_is_503_while_loading_then_200(make_engine):
    release = threading.Event()

    def slow_loader() -> AsyncEngine:
        release.wait(30)
        return make_engine()

    with TestClient(create_app(slow_loader, "m")) as client:
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        assert client.get("/v1/models").status_code == 503
        release.set()
        for _ in range(300):
            if client.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/health").status_code == 200
        assert client.post("/v1/chat/completions", json=CHAT).json()["usage"]["completion_tokens"] == 4


def test_loader_failure_is_reported():
    errors = []

    def broken() -> AsyncEngine:
        raise RuntimeError("no such weights")

    with TestClient(create_app(broken, "m", on_load_error=errors.append)) as client:
        for _ in range(100):
            if errors:
                break
            threading.Event().wait(0.05)
        assert [str(e) for e in errors] == ["no such weights"]
        assert client.get("/health").status_code == 503


def test_metrics_request_id_and_access_log(make_engine, caplog):
    caplog.set_level(logging.INFO, logger="mistralpy.access")
    with TestClient(create_app(make_engine(), "m")) as client:
        r = client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "abc-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
        client.post("/v1/chat/completions", json=CHAT)  # same prompt: served by the prefix cache
        generated = client.get("/v1/models").headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        text = client.get("/metrics").text
    assert _metric(text, "time_to_first_token_seconds_count") == 2
    assert _metric(text, "inter_token_latency_seconds_count") == 6  # 3 gaps after the first of 4 tokens, twice
    assert _metric(text, "e2e_request_latency_seconds_count") == 2
    assert _metric(text, "generation_tokens_total") == 8
    assert _metric(text, "prefix_cache_hit_rate") > 0
    assert _metric(text, 'request_finished_total{reason="length"}') == 2
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "num_preemptions_total",
                 "prompt_tokens_total"):  # fmt: skip
        _metric(text, name)
    lines = [r.getMessage() for r in caplog.records if r.name == "mistralpy.access"]
    assert any('"POST /v1/chat/completions" 200' in line and "id=abc-123" in line for line in lines)


def test_body_limit_413(make_engine):
    with TestClient(create_app(make_engine(), "m", limits=RequestLimits(max_body_bytes=2000))) as client:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        r = client.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        chunked = client.post("/v1/chat/completions", content=(b"x" * 1000 for _ in range(5)))  # no Content-Length
        assert chunked.status_code == 413
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def _asgi_call(app, headers: list[tuple[bytes, bytes]]) -> dict:
    """One POST straight into the ASGI app whose receive() fails the test: the body must never be read."""

    async def receive() -> dict:
        raise AssertionError("the request body was read")

    sent = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "raw_path": b"/v1/completions",
             "query_string": b"", "root_path": "", "headers": headers, "http_version": "1.1", "scheme": "http",
             "server": ("testserver", 80), "client": ("client", 1), "asgi": {"version": "3.0"}}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]


@pytest.mark.parametrize("api_key, status", [("k", 401), (None, 503)])
def test_401_and_503_are_answered_without_reading_the_body(api_key, status):
    def never_loads() -> AsyncEngine:
        raise AssertionError("no engine: this app stays loading (no lifespan runs)")

    app = create_app(never_loads, "m", api_key=api_key)
    for length, closes in ((b"5000000", True), (b"300", False)):
        start = _asgi_call(app, [(b"content-type", b"application/json"), (b"content-length", length)])
        assert start["status"] == status
        assert ((b"connection", b"close") in start["headers"]) == closes  # a large unread body is never read
    start = _asgi_call(app, [(b"transfer-encoding", b"chunked")])
    assert start["status"] == status and (b"connection", b"close") in start["headers"]


def test_cors(make_engine):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(make_engine(), "m", api_key="k", cors_allowed_origins=["http://app.example"])) as c:
        r = c.options("/v1/chat/completions", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
        r = c.get("/v1/models", headers={"Origin": "http://app.example", "Authorization": "Bearer k"})
        assert r.headers["access-control-allow-origin"] == "http://app.example"
    with TestClient(create_app(make_engine(), "m")) as c:  # default: no CORS headers at all
        assert "access-control-allow-origin" not in c.get("/v1/models", headers={"Origin": "http://x"}).headers


def test_json_bodies_only(make_engine):
    body = json.dumps(CHAT)
    with TestClient(create_app(make_engine(), "m")) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            r = client.post("/v1/chat/completions", content=body, headers={"Content-Type": content_type})
            assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]["message"]
        for content_type in ("application/json; charset=utf-8", "application/vnd.api+json", None):
            headers = {"Content-Type": content_type} if content_type else {}
            assert client.post("/v1/chat/completions", content=body, headers=headers).status_code == 200


def test_openapi_document_lists_every_route(make_engine):
    app = create_app(make_engine(), "m")
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
    served = {(route.path.replace(":path", ""), method.lower()) for route in app.routes for method in route.methods}
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert {op for op in served if op[1] != "head"} - {("/openapi.json", "get")} == described  # HEAD: Starlette's
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert "messages" in schema["required"] and "temperature" in schema["properties"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
