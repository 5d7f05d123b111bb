"""The MCP client: `--mcp-config` in mistral.rs's and Claude Desktop's shapes, a real MCP server (tests/
mcp_tool_server.py on the official SDK) over stdio and streamable HTTP, and the rounds a chat request goes through:
the model's call executed by the server (the MCP server's own log is the oracle for what it received), its result
fed back (the final answer equals the same conversation sent by hand), on chat completions, streamed, and on the
Responses API."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.errors import InvalidRequestError
from mistralpy.mcp_client.config import McpClientConfig, McpServerConfig, read_mcp_config
from mistralpy.mcp_client.toolbox import McpToolbox
from mistralpy.server.app import create_app

from .server_process import ServerProcess, free_port, http

SERVER = str(Path(__file__).with_name("mcp_tool_server.py"))
ASK = [{"role": "user", "content": "What is the secret word for fruit?"}]
FORCE = {"type": "function", "function": {"name": "secret_word"}}


def stdio(log: Path, **kw) -> McpClientConfig:
    return McpClientConfig([McpServerConfig("tools", sys.executable, [SERVER, str(log)])], **kw)


def logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_both_config_shapes(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({
        "servers": [
            {"name": "fs", "source": {"type": "Process", "command": "npx", "args": ["-y", "srv"], "env": {"K": "v"}},
             "tool_prefix": "fs"},
            {"name": "hf", "source": {"type": "Http", "url": "https://x/mcp"}, "bearer_token": "tok"},
            {"name": "off", "source": {"type": "Http", "url": "https://y"}, "enabled": False},
        ],
        "tool_timeout_secs": 5, "max_concurrent_calls": 2,
    }))  # fmt: skip
    config = read_mcp_config(str(path))
    fs, hf = config.servers
    assert (fs.command, fs.args, fs.env, fs.tool_prefix) == ("npx", ["-y", "srv"], {"K": "v"}, "fs")
    assert (hf.url, hf.headers) == ("https://x/mcp", {"Authorization": "Bearer tok"})
    assert (config.tool_timeout_secs, config.max_concurrent_calls, config.max_rounds) == (5.0, 2, 8)
    path.write_text(json.dumps({"mcpServers": {
        "local": {"command": "python", "args": ["s.py"]}, "remote": {"url": "http://h/mcp", "headers": {"A": "b"}},
    }}))  # fmt: skip
    local, remote = read_mcp_config(str(path)).servers
    assert (local.name, local.command, remote.name, remote.headers) == ("local", "python", "remote", {"A": "b"})


@pytest.mark.parametrize(
    "doc, message",
    [
        ({}, "either 'servers'"),
        ({"servers": [], "mcpServers": {}}, "either 'servers'"),
        ({"servers": []}, "no enabled MCP server"),
        ({"servers": [{"name": "a", "source": {"type": "WebSocket", "url": "ws://x"}}]}, "Process or Http"),
        ({"servers": [{"name": "a", "source": {"type": "Process"}}]}, "command"),
        ({"mcpServers": {"a": {"args": []}}}, "needs 'command'"),
        ({"mcpServers": {"a": {"url": "http://x", "type": "sse"}}}, "only streamable HTTP"),
        ({"mcpServers": {"a": {"command": "x"}}, "tool_timeout_secs": 0}, "tool_timeout_secs"),
        ({"mcpServers": {"a": {"command": "x", "colour": 1}}}, "unknown keys"),
        (
            {"servers": [{"name": "a", "source": {"type": "Http", "url": "u"}}], "auto_register_tools": False},
            "auto_register_tools",
        ),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, doc, message):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidRequestError, match=message):
        read_mcp_config(str(path))


def test_stdio_tools_calls_errors_and_prefixes(tmp_path):
    log = tmp_path / "calls.jsonl"

    async def run():
        box = McpToolbox(stdio(log))
        await box.start()
        try:
            assert box.names == ["secret_word", "add", "fail"]
            schema = {t["function"]["name"]: t["function"]["parameters"] for t in box.function_tools()}
            assert schema["add"]["properties"].keys() == {"a", "b"} and set(schema["add"]["required"]) == {"a", "b"}
            assert await box.call("add", '{"a": 2, "b": 40}') == "42"
            failed = await box.call("fail", '{"reason": "x"}')  # the tool's error is the result the model reads
            assert failed.startswith("error: ") and failed.endswith("failed on purpose: x")
            assert (await box.call("add", "[1]")).startswith("error: the arguments must be a JSON object")
            assert (await box.call("add", '{"a": "two", "b": 1}')).startswith("error:")  # the server's validation
        finally:
            await box.stop()
        clash = McpToolbox(McpClientConfig([McpServerConfig("one", sys.executable, [SERVER, str(log)]),
                                            McpServerConfig("two", sys.executable, [SERVER, str(log)])]))  # fmt: skip
        with pytest.raises(InvalidRequestError, match="'one' and 'two' both offer a tool 'secret_word'"):
            await clash.start()
        two = McpServerConfig("two", sys.executable, [SERVER, str(log)], tool_prefix="b")
        prefixed = McpToolbox(McpClientConfig([McpServerConfig("one", sys.executable, [SERVER, str(log)]), two]))
        await prefixed.start()
        try:
            assert prefixed.names == ["secret_word", "add", "fail", "b_secret_word", "b_add", "b_fail"]
            assert await prefixed.call("b_add", '{"a": 1, "b": 1}') == "2"
        finally:
            await prefixed.stop()
        missing = McpToolbox(McpClientConfig([McpServerConfig("gone", "/no/such/command")]))
        with pytest.raises(InvalidRequestError, match="cannot connect to the MCP server 'gone'"):
            await missing.start()

    asyncio.run(run())
    assert logged(log) == [
        {"tool": "add", "arguments": {"a": 2, "b": 40}},
        {"tool": "add", "arguments": {"a": 1, "b": 1}},
    ]


def test_streamable_http_server(tmp_path):
    log, port = tmp_path / "calls.jsonl", free_port()
    proc = subprocess.Popen([sys.executable, SERVER, str(log), str(port)], stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port)

        async def run():
            box = McpToolbox(McpClientConfig([McpServerConfig("web", url=f"http://127.0.0.1:{port}/mcp",
                                                              headers={"X-Test": "1"})]))  # fmt: skip
            await box.start()
            try:
                assert await box.call("secret_word", '{"topic": "sea"}') == "The secret word for 'sea' is PINEAPPLE-3."
            finally:
                await box.stop()

        asyncio.run(run())
    finally:
        proc.kill()
    assert logged(log) == [{"tool": "secret_word", "arguments": {"topic": "sea"}}]


@pytest.fixture(scope="module")
def embedded_engine():
    engine = AsyncEngine.from_config(EngineConfig(max_num_seqs=4))
    yield engine
    asyncio.run(engine.shutdown())


def test_chat_rounds_run_the_call_and_feed_its_result_back(tmp_path, embedded_engine):
    log = tmp_path / "calls.jsonl"
    box = McpToolbox(stdio(log, max_rounds=1))  # one round may call; the next must answer
    body = {"messages": ASK, "tool_choice": FORCE, "parallel_tool_calls": False, "max_tokens": 60, "temperature": 0}

    async def run():
        with_mcp = create_app(embedded_engine, "m", mcp=box)
        plain = create_app(embedded_engine, "m")
        await box.start()
        for slot in with_mcp.state.models.slots.values():
            slot.ctx.mcp = box
        try:
            async with _client(with_mcp) as client, _client(plain) as by_hand:
                r = await client.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                answer = r.json()["choices"][0]
                assert answer["finish_reason"] in ("stop", "length") and not answer["message"].get("tool_calls")
                [call] = logged(log)
                assert call["tool"] == "secret_word" and isinstance(call["arguments"]["topic"], str)
                topic = call["arguments"]["topic"]
                result = f"The secret word for {topic!r} is PINEAPPLE-{len(topic)}."  # what the tool returns
                function = {"name": "secret_word", "arguments": json.dumps(call["arguments"])}
                messages = [*ASK, {"role": "assistant", "content": None,
                                   "tool_calls": [{"id": "c1", "type": "function", "function": function}]},
                            {"role": "tool", "tool_call_id": "c1", "content": result}]  # fmt: skip
                replay = {**body, "messages": messages, "tools": box.function_tools(), "tool_choice": "none"}
                want = (await by_hand.post("/v1/chat/completions", json=replay)).json()
                assert answer["message"]["content"] == want["choices"][0]["message"]["content"]
                usage = r.json()["usage"]
                assert usage["prompt_tokens"] > want["usage"]["prompt_tokens"]  # both rounds counted
                r = await client.post(
                    "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
                )
                events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
                text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
                counts = ("prompt_tokens", "completion_tokens")  # the cached share differs: round one is cached now
                assert text == answer["message"]["content"]
                pieces = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
                assert len(pieces) > 1 and len({e["id"] for e in events}) == 1  # streamed as generated, one id
                assert [events[-1]["usage"][k] for k in counts] == [usage[k] for k in counts]
                assert r.text.rstrip().endswith("data: [DONE]")
                forced = {"type": "function", "name": "secret_word"}  # the Responses API's shape
                request = {"model": "m", "input": ASK[0]["content"], "tool_choice": forced,
                           "parallel_tool_calls": False, "max_output_tokens": 60, "temperature": 0}  # fmt: skip
                r = await client.post("/v1/responses", json=request)
                assert r.status_code == 200, r.text
                texts = [c["text"] for item in r.json()["output"] if item["type"] == "message" for c in item["content"]]
                assert texts == [answer["message"]["content"]]
                r = await client.post("/v1/chat/completions", json={**body, "n": 2})
                assert r.status_code == 400 and "n = 1" in r.text
                clash = {**body, "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}]}
                assert (await client.post("/v1/chat/completions", json=clash)).status_code == 400
        finally:
            await box.stop()

    asyncio.run(run())
    assert [c["tool"] for c in logged(log)] == ["secret_word"] * 3  # chat, stream, Responses: one call each


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120)


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the MCP test server did not start")


def test_serve_with_mcp_config(tmp_path):
    log, config = tmp_path / "calls.jsonl", tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"tools": {"command": sys.executable, "args": [SERVER, str(log)]}},
                                  "max_rounds": 1}))  # fmt: skip
    server = ServerProcess("--mcp-config", str(config)).wait_ready()
    try:
        body = {"messages": ASK, "tool_choice": FORCE, "parallel_tool_calls": False, "max_tokens": 60, "temperature": 0}
        r = http(server, "POST", "/v1/chat/completions", key=None, json=body)
        assert r.status_code == 200 and not r.json()["choices"][0]["message"].get("tool_calls"), r.text
        assert [c["tool"] for c in logged(log)] == ["secret_word"]
    finally:
        server.stop(signal.SIGKILL)
    config.write_text(json.dumps({"mcpServers": {"gone": {"command": "/no/such/mcp-server"}}}))
    failed = ServerProcess("--mcp-config", str(config))
    assert failed.proc.wait(timeout=60) == 1
    assert "cannot connect to the MCP server 'gone'" in failed.output()
