"""Prompts are tokenized and chat templates rendered in a worker thread, never on the event loop's thread nor the
engine's: the engine is handed token ids (and a text prompt's text, for echo)."""

from __future__ import annotations

import asyncio
import threading

import httpx

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

MESSAGES = [{"role": "user", "content": "Hello there"}]


def test_the_engine_gets_token_ids_made_off_both_loops(tiny_llama, tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tokenizer_dir)  # the oracle
    text_ids = hf.encode("Hello world")
    chat_ids = hf.encode(hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)  # fmt: skip
    tokenizing_threads: list[threading.Thread] = []
    added: list[tuple] = []

    async def run() -> list[httpx.Response]:
        engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[2]), dtype="float32"))
        tokenizer, core = engine.tokenizer, engine.engine
        encode, render, add_request = tokenizer.encode, tokenizer.apply_chat_template, core.add_request

        def spy(fn):
            def call(*args, **kwargs):
                tokenizing_threads.append(threading.current_thread())
                return fn(*args, **kwargs)

            return call

        tokenizer.encode, tokenizer.apply_chat_template = spy(encode), spy(render)

        def add(prompt, params, request_id=None, prompt_token_ids=None, cache_salt=None, grammar=None, lora=None):
            added.append((prompt, prompt_token_ids))
            return add_request(prompt, params, request_id, prompt_token_ids, cache_salt, grammar, lora)

        core.add_request = add
        transport = httpx.ASGITransport(app=create_app(engine, "m"))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                body = {"prompt": "Hello world", "max_tokens": 2, "echo": True}
                return [
                    await client.post("/v1/completions", json=body),
                    await client.post("/v1/completions", json={"prompt": [[5, 6, 7]], "max_tokens": 2}),
                    await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2}),
                    await client.post("/tokenize", json={"messages": MESSAGES}),
                ]
        finally:
            await engine.shutdown()

    completion, ids_completion, chat, tokenized = asyncio.run(run())
    assert all(r.status_code == 200 for r in (completion, ids_completion, chat, tokenized))
    assert added == [("Hello world", text_ids), ([5, 6, 7], [5, 6, 7]), (chat_ids, chat_ids)]
    assert tokenizing_threads and all(
        t is not threading.main_thread() and t.name != "mistralpy-engine" for t in tokenizing_threads
    )  # asyncio.run's loop runs on the main thread; the engine's loop on "mistralpy-engine"
    echoed = completion.json()
    assert echoed["choices"][0]["text"].startswith("Hello world") and echoed["usage"]["prompt_tokens"] == len(text_ids)
    assert ids_completion.json()["usage"]["prompt_tokens"] == 3
    assert chat.json()["usage"]["prompt_tokens"] == len(chat_ids) and tokenized.json()["tokens"] == chat_ids
