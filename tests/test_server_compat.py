"""What clients actually send: explicit nulls for optional fields (the openai package sends null for every argument
given as None) mean "not set" — the output equals the request without them; llama.cpp's /tokenize and /detokenize
shapes, with transformers' tokenizer of the same model as the oracle."""

from __future__ import annotations

from transformers import AutoTokenizer

from .server_process import MODEL, http

MESSAGES = [{"role": "user", "content": "Hello there"}]
NULLS = dict(
    n=None, stop=None, seed=None, logprobs=None, top_logprobs=None, presence_penalty=None, frequency_penalty=None,
    logit_bias=None, stream_options=None, tools=None, tool_choice=None, response_format=None, user=None,
    parallel_tool_calls=None, top_p=None,
)  # fmt: skip


def test_explicit_nulls_are_unset_fields(client):
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=8)
    nulls = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=8, **NULLS)
    assert nulls.choices[0].message.content == plain.choices[0].message.content
    assert len(nulls.choices) == 1 and nulls.choices[0].logprobs is None
    text = client.completions.create(model=MODEL, prompt="Once", temperature=0, max_tokens=6).choices[0].text
    given = dict(echo=None, best_of=None, suffix=None, logprobs=None, n=None, stop=None, seed=None, user=None)
    assert (
        client.completions.create(model=MODEL, prompt="Once", temperature=0, max_tokens=6, **given).choices[0].text
        == text
    )


def test_a_required_field_given_null_is_still_a_400(server):
    r = http(server, "POST", "/v1/chat/completions", json={"model": MODEL, "messages": None})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = http(server, "POST", "/v1/completions", json={"model": MODEL, "prompt": "x", "best_of": 2})
    assert r.status_code == 400 and "best_of" in r.json()["error"]["message"]


def test_llama_cpp_tokenize_and_detokenize_shapes(server, tokenizer_dir):
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "Hello world, tokens!"
    r = http(server, "POST", "/tokenize", json={"content": text})
    assert r.status_code == 200 and r.json() == {"tokens": hf.encode(text, add_special_tokens=False)}
    r = http(server, "POST", "/tokenize", json={"content": text, "add_special": True})
    assert r.json()["tokens"] == hf.encode(text, add_special_tokens=True)
    pieces = http(server, "POST", "/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    ids = hf.encode(text, add_special_tokens=False)
    assert [p["id"] for p in pieces] == ids
    assert [p["piece"] for p in pieces] == [hf.decode([i]) for i in ids]
    r = http(server, "POST", "/tokenize", json={"content": text, "parse_special": False})
    assert r.status_code == 400 and "parse_special" in r.json()["error"]["message"]
    r = http(server, "POST", "/tokenize", json={"content": text, "prompt": text})
    assert r.status_code == 400 and "exactly one" in r.json()["error"]["message"]
    back = http(server, "POST", "/detokenize", json={"tokens": ids}).json()
    assert back["content"] == back["prompt"] == hf.decode(ids)
