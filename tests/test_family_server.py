"""Every family behind the OpenAI server (in-process ASGI): a chat completion, a streamed one, and a completion."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

from .families import FAMILIES

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5, "temperature": 0}


async def _serve(source: str) -> None:
    engine = AsyncEngine.from_config(EngineConfig(model=source, dtype="float32", block_size=4))
    transport = httpx.ASGITransport(app=create_app(engine, "m"))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] == "length"
            r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
            events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            streamed = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e)["choices"])
            assert streamed == body["choices"][0]["message"]["content"]
            r = await client.post("/v1/completions", json={"model": "m", "prompt": [5, 6, 7], "max_tokens": 4})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    finally:
        await engine.shutdown()


@pytest.mark.parametrize("name", FAMILIES)
def test_family_served(family_files, name):
    asyncio.run(_serve(str(family_files(name).gguf)))
