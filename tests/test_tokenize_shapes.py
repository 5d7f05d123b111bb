"""/tokenize and /detokenize in llama.cpp's request and answer shapes (content, add_special, with_pieces; tokens ->
content) beside vLLM's, in-process; transformers' tokenizer of the same files is the oracle."""

from __future__ import annotations

import asyncio

import httpx
from transformers import AutoTokenizer

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

TEXT = "Hello world, how are you?"


def test_llama_cpp_shapes(tiny_llama, tokenizer_dir):
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)

    async def run() -> dict:
        engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[1]), dtype="float32"))
        transport = httpx.ASGITransport(app=create_app(engine, "m"))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            post = client.post
            answers = {
                "plain": await post("/tokenize", json={"content": TEXT}),
                "special": await post("/tokenize", json={"content": TEXT, "add_special": True}),
                "pieces": await post("/tokenize", json={"content": TEXT, "with_pieces": True}),
                "vllm": await post("/tokenize", json={"prompt": TEXT}),
                "mixed": await post("/tokenize", json={"content": TEXT, "return_token_strs": True}),
                "two": await post("/tokenize", json={"content": TEXT, "prompt": TEXT}),
                "unparsed": await post("/tokenize", json={"content": TEXT, "parse_special": False}),
                "pieces_vllm": await post("/tokenize", json={"prompt": TEXT, "with_pieces": True}),
            }
            ids = hf.encode(TEXT, add_special_tokens=False)
            answers["detok"] = await post("/detokenize", json={"tokens": ids})
        await engine.shutdown()
        return answers

    r = asyncio.run(run())
    ids = hf.encode(TEXT, add_special_tokens=False)
    assert r["plain"].json() == {"tokens": ids}  # llama.cpp's add_special defaults to false
    assert r["special"].json() == {"tokens": hf.encode(TEXT, add_special_tokens=True)}
    assert r["pieces"].json() == {"tokens": [{"id": i, "piece": hf.decode([i])} for i in ids]}
    assert "".join(p["piece"] for p in r["pieces"].json()["tokens"]) == TEXT
    assert r["vllm"].json()["tokens"] == hf.encode(TEXT, add_special_tokens=True) and "count" in r["vllm"].json()
    assert r["detok"].json() == {"prompt": TEXT, "content": TEXT}
    for key in ("mixed", "two", "unparsed", "pieces_vllm"):
        assert r[key].status_code == 400, key
