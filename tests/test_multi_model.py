"""Several models in one server: requests route by `model` (each answer is its own model's, transformers' greedy
tokens the oracle), /v1/models lists them with their status, unknown names are 404s, /metrics labels each model's
samples, and a model unloaded at run time frees its engine and comes back on its next request."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
import torch
from starlette.testclient import TestClient
from transformers import AutoTokenizer

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app
from mistralpy.server.context import ServerContext
from mistralpy.server.model_registry import ModelRegistry, ModelSlot

from .helpers import make_tiny_llama

PROMPT = [1, 504, 3216, 314, 260, 1345]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tokenizer_dir):
    """Two tiny Llamas that differ only in their random weights: (HF model, folder) each."""
    out = []
    for seed in (3, 4):
        folder = tmp_path_factory.mktemp(f"llama_seed{seed}")
        model = make_tiny_llama(folder, seed=seed)
        for f in tokenizer_dir.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        out.append((model, folder))
    return out


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-n:]


def registry(two_models, loaders: bool = False) -> ModelRegistry:
    def load(folder):
        return lambda: AsyncEngine.from_config(EngineConfig(model=str(folder), dtype="float32", kv_cache_tokens=1024))

    slots = []
    for name, (_, folder) in zip(("a", "b"), two_models, strict=True):
        ready = None if loaders else load(folder)()
        slots.append(ModelSlot(ServerContext(ready, name), load(folder), str(folder)))
    return ModelRegistry(slots, default="b")


def run(app, fn):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            await fn(client)
        await app.state.models.shutdown("test over")

    asyncio.run(go())


def test_requests_route_by_model(two_models, tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    expected = {name: tokenizer.decode(hf_greedy(m, PROMPT, 6)) for name, (m, _) in zip("ab", two_models, strict=True)}
    assert expected["a"] != expected["b"]  # the routing is visible in the text

    async def check(client):
        for model in ("a", "b", "default", None):
            body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "ignore_eos": True}
            r = await client.post("/v1/completions", json=body if model is None else {**body, "model": model})
            assert r.status_code == 200, r.text
            want = model if model in ("a", "b") else "b"  # none, or "default": the default model
            assert r.json()["choices"][0]["text"] == expected[want] and r.json()["model"] == want
        r = await client.post("/v1/completions", json={"model": "c", "prompt": PROMPT, "max_tokens": 1})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "'a', 'b'" in r.json()["error"]["message"]
        cards = (await client.get("/v1/models")).json()["data"]
        want_cards = [("a", "loaded", 512), ("b", "loaded", 512)]
        assert [(c["id"], c["status"], c["max_model_len"]) for c in cards] == want_cards
        assert (await client.get("/v1/models/a")).json()["root"] == two_models[0][1].name
        text = (await client.get("/metrics")).text
        counts = dict(re.findall(r'^mistralpy:generation_tokens_total\{model_name="(\w)"\} (\S+)$', text, re.M))
        assert counts == {"a": "6.0", "b": "18.0"}  # each model's own engine counted its own tokens

    run(create_app(registry(two_models)), check)


def test_unload_frees_the_engine_and_the_next_request_loads_it(two_models):
    models = registry(two_models, loaders=True)
    body = {"model": "a", "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "ignore_eos": True}
    with TestClient(create_app(models, model_runtime_updates=True)) as client:  # runs the lifespan: loads both
        while client.get("/health").status_code == 503:
            time.sleep(0.05)
        before = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
        engine = models.slots["a"].ctx.engine
        r = client.post("/v1/models/unload", json={"model_id": "a"})
        assert r.status_code == 200 and r.json() == {"model_id": "a", "status": "unloaded"}
        assert models.slots["a"].ctx.engine is None and engine._thread is not None and not engine._thread.is_alive()
        statuses = {c["id"]: c["status"] for c in client.get("/v1/models").json()["data"]}
        assert statuses == {"a": "unloaded", "b": "loaded"}
        assert 'model_name="a"' not in client.get("/metrics").text
        after = client.post("/v1/completions", json=body).json()["choices"][0]["text"]  # loads it again first
        assert after == before and models.slots["a"].ctx.engine not in (None, engine)
        assert client.post("/v1/models/load", json={"model_id": "zzz"}).status_code == 404
        r = client.post("/v1/models/load", json={"model_id": "zzz", "model_path": "/nowhere"})
        assert r.status_code == 400 and "loads only the models it was started with" in r.text
        assert client.post("/v1/models/unload", json={"model_id": "a", "dtype": "float32"}).status_code == 400
        assert client.post("/v1/models/load", json={"model_id": "b"}).json() == {"model_id": "b", "status": "loaded"}


def test_load_and_unload_routes_need_the_flag(two_models):
    async def check(client):
        r = await client.post("/v1/models/unload", json={"model_id": "a"})
        assert r.status_code in (404, 405)
        assert (await client.get("/v1/models")).status_code == 200

    run(create_app(registry(two_models)), check)


def test_an_embedding_model_beside_a_generating_one(two_models):
    """`serve --config` with a `task = "embed"` entry: /v1/embeddings goes to the embedding model by name, chat to
    the other; sentence-transformers is the oracle for the vectors."""
    from sentence_transformers import SentenceTransformer

    from mistralpy.embed.default_model import default_embedding_model_path

    path = default_embedding_model_path()
    embed = AsyncEngine.from_config(EngineConfig(model=path, task="embed"))
    chat = AsyncEngine.from_config(EngineConfig(model=str(two_models[0][1]), dtype="float32", kv_cache_tokens=1024))
    models = ModelRegistry([ModelSlot(ServerContext(chat, "chat"), None, "chat"),
                            ModelSlot(ServerContext(embed, "minilm"), None, path)])  # fmt: skip
    texts = ["a cat sat on the mat", "stock markets fell sharply today"]
    want = torch.tensor(SentenceTransformer(path, device="cpu").encode(texts))

    async def check(client):
        r = await client.post("/v1/embeddings", json={"model": "minilm", "input": texts})
        assert r.status_code == 200, r.text
        got = torch.tensor([d["embedding"] for d in r.json()["data"]])
        assert torch.nn.functional.cosine_similarity(got, want).min() >= 0.9999
        r = await client.post("/v1/completions", json={"model": "chat", "prompt": PROMPT, "max_tokens": 2})
        assert r.status_code == 200 and r.json()["model"] == "chat"
        r = await client.post("/v1/embeddings", json={"input": texts})  # the default model generates
        assert r.status_code == 400

    run(create_app(models), check)
