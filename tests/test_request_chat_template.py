"""A chat_template per request (servers started with --trust-request-chat-template, as vLLM) and per LLM.chat call:
the prompt is the given template's rendering (rendered here by jinja2 and tokenized by transformers: the oracle);
without the flag, or with a broken template, a 400."""

from __future__ import annotations

import asyncio

import httpx
import jinja2
from transformers import AutoTokenizer

from mistralpy import LLM, SamplingParams
from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

TEMPLATE = (
    "{% for m in messages %}<<{{ m.role }}>> {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def expected_ids(tokenizer_dir) -> list[int]:
    text = jinja2.Template(TEMPLATE).render(messages=MESSAGES, add_generation_prompt=True)
    return AutoTokenizer.from_pretrained(tokenizer_dir)(text, add_special_tokens=False)["input_ids"]


def test_llm_chat_takes_a_template_per_call(tiny_llama, tokenizer_dir):
    llm = LLM(str(tiny_llama[1]), dtype="float32")
    params = SamplingParams(max_tokens=1, temperature=0)
    [out] = llm.chat(MESSAGES, params, chat_template=TEMPLATE)
    assert out.prompt_token_ids == expected_ids(tokenizer_dir)
    [default] = llm.chat(MESSAGES, params)
    assert default.prompt_token_ids != out.prompt_token_ids


def test_server_takes_a_request_template_only_when_trusted(tiny_llama, tokenizer_dir):
    async def run():
        engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[1]), dtype="float32"))
        trusting, strict = create_app(engine, "m"), create_app(engine, "m")
        trusting.state.models.slots["m"].ctx.trust_request_chat_template = True  # what the flag sets
        body = {"messages": MESSAGES, "max_tokens": 1, "chat_template": TEMPLATE}
        async with _client(trusting) as client, _client(strict) as other:
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == len(expected_ids(tokenizer_dir))
            r = await other.post("/v1/chat/completions", json=body)
            assert r.status_code == 400 and "--trust-request-chat-template" in r.json()["error"]["message"]
            assert r.json()["error"]["param"] == "chat_template"
            r = await client.post("/v1/chat/completions", json={**body, "chat_template": "{% for %}"})
            assert r.status_code == 400 and "chat_template" in r.json()["error"]["message"]
        await engine.shutdown()

    asyncio.run(run())


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60)
