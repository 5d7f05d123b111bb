"""Structured output over HTTP: OpenAI's response_format and vLLM's structured_outputs against a live server, each
output checked by an independent parser; bad specs are 400s quoting llguidance, and the server keeps serving."""

from __future__ import annotations

import json
import re

import jsonschema

from .server_process import MODEL, http

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99}, "ok": {"type": "boolean"}},
    "required": ["id", "ok"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Give me a record."}]


def _chat(server, **body):
    return http(server, "POST", "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **body})


def test_openai_response_format_json_schema_and_json_object(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA, "strict": True}}
    res = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=fmt, n=5, temperature=1.0, max_tokens=60
    )
    for choice in res.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    res = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format={"type": "json_object"}, temperature=0, max_tokens=200
    )
    if res.choices[0].finish_reason == "stop":  # any object: the budget may end a long one first
        assert isinstance(json.loads(res.choices[0].message.content), dict)
    text = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format={"type": "text"}, max_tokens=4
    )
    assert text.choices[0].message.content is not None


def test_vllm_structured_outputs_on_completions_and_chat(server):
    r = http(
        server,
        "POST",
        "/v1/completions",
        json={"prompt": "code:", "structured_outputs": {"regex": "[A-Z]{3}[0-9]{2}"}, "n": 4, "max_tokens": 12},
    )
    assert r.status_code == 200, r.text
    assert all(re.fullmatch("[A-Z]{3}[0-9]{2}", c["text"]) for c in r.json()["choices"])
    r = _chat(server, structured_outputs={"choice": ["alpha", "beta"]}, temperature=1.0, n=4, max_tokens=8)
    assert r.status_code == 200, r.text
    assert all(c["message"]["content"] in ("alpha", "beta") for c in r.json()["choices"])


def test_bad_specs_are_400s_and_the_server_keeps_serving(server):
    cases = [
        ({"structured_outputs": {"regex": "a("}}, "unclosed group"),
        ({"structured_outputs": {"json": {"type": "integer", "minimum": 3, "maximum": 1}}}, "minimum (3)"),
        ({"response_format": {"type": "json_schema"}}, "json_schema is required"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "exactly one"),
        ({"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}}, "not both"),
        ({"structured_outputs": {"regex": "a", "disable_fallback": True}}, "disable_fallback"),
    ]
    for body, quoted in cases:
        r = _chat(server, max_tokens=4, **body)
        assert r.status_code == 400 and quoted in r.json()["error"]["message"], (body, r.text)
    assert _chat(server, max_tokens=4).status_code == 200
