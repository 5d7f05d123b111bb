"""The app in-process (httpx's ASGI transport): an engine failure is a generic 500, and the server keeps serving."""

from __future__ import annotations

import asyncio

import httpx

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

BODY = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


def test_engine_failure_is_a_generic_500(tiny_llama):
    async def run() -> None:
        engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[2]), dtype="float32"))
        real_step = engine.engine.step
        fail = {"on": True}

        def step(delta: bool = False):
            if fail["on"]:
                raise RuntimeError("secret internal detail")
            return real_step(delta)

        engine.engine.step = step
        transport = httpx.ASGITransport(app=create_app(engine, "m"), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/v1/chat/completions", json=BODY)
            assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
            assert "secret" not in r.text and "Traceback" not in r.text
            r = await client.post("/v1/chat/completions", json={**BODY, "stream": True})
            events = [line for line in r.text.splitlines() if line.startswith("data: ")]
            assert r.status_code == 200 and '"server_error"' in events[-2] and events[-1] == "data: [DONE]"
            assert "secret" not in r.text
            fail["on"] = False
            r = await client.post("/v1/chat/completions", json=BODY)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
            assert (await engine.call(lambda e: e.has_unfinished_requests())) is False
        await engine.shutdown()

    asyncio.run(run())
