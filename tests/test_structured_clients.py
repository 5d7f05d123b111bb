"""Structured output through real clients against a live `mistralpy serve` of the embedded model: the `openai` client's
`chat.completions.parse` with a pydantic model, LangChain's `ChatOpenAI.with_structured_output`, streaming on chat and
completions, n > 1, the prefix cache seen in /metrics, and bad specs as 400s on every route while the server keeps
serving. The oracles are pydantic, jsonschema and re, none of them llguidance."""

from __future__ import annotations

import json
import re
import signal
from typing import Annotated, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from .server_process import KEY, MODEL, ServerProcess, http, metrics

RECORD = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 16},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "horror"]}, "minItems": 1, "maxItems": 2},
    },
    "required": ["title", "year", "genres"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Describe a film as JSON."}]


class Address(BaseModel):
    city: str = Field(max_length=12)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)
    role: Literal["admin", "user", "guest"]
    address: Address  # a nested model: the client sends it as a $ref into $defs
    nicknames: list[Annotated[str, Field(max_length=6)]] = Field(max_length=2)


@pytest.fixture(scope="module")
def embedded_server():
    proc = ServerProcess("--served-model-name", MODEL, "--api-key", KEY, "--max-num-seqs", "64")
    try:
        yield proc.wait_ready(timeout=300)  # the embedded model: loads in seconds, but the machine may be busy
    finally:
        proc.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def oai(embedded_server):
    return openai.OpenAI(base_url=f"{embedded_server.url}/v1", api_key=KEY, max_retries=0)


def _check_person(person: Person) -> None:
    assert isinstance(person, Person) and isinstance(person.address, Address)
    assert type(person.age) is int and 0 <= person.age <= 120 and person.role in ("admin", "user", "guest")
    assert re.fullmatch("[0-9]{5}", person.address.zip) and len(person.nicknames) <= 2


def test_openai_parse_returns_pydantic_instances(oai):
    res = oai.chat.completions.parse(
        model=MODEL, messages=MESSAGES, response_format=Person, n=6, temperature=1.0, max_tokens=200
    )
    assert len(res.choices) == 6
    for choice in res.choices:
        assert choice.finish_reason == "stop" and choice.message.refusal is None
        _check_person(choice.message.parsed)
        assert Person.model_validate_json(choice.message.content) == choice.message.parsed


def test_langchain_with_structured_output(embedded_server):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=f"{embedded_server.url}/v1", api_key=KEY, model=MODEL, temperature=1.0, max_tokens=200, max_retries=0
    )
    # None: LangChain's default method for ChatOpenAI (json_schema in langchain-openai 1.x; tools in older ones)
    for method in ("json_schema", None):
        structured = chat.with_structured_output(Person, **({"method": method} if method else {}))
        for _ in range(2):
            _check_person(structured.invoke("Describe a person."))


def test_langchain_with_structured_output_by_function_calling(embedded_server):
    from langchain_openai import ChatOpenAI

    # greedy: a sampled call can run past max_tokens inside the forced call's JSON (a CI run got no call back)
    chat = ChatOpenAI(
        base_url=f"{embedded_server.url}/v1", api_key=KEY, model=MODEL, max_tokens=200, max_retries=0, temperature=0
    )
    _check_person(chat.with_structured_output(Person, method="function_calling").invoke("Describe a person."))


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "record", "schema": schema, "strict": True}}


def test_sampled_outputs_through_the_server_all_validate(oai):
    chat = oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=_schema_format(RECORD), n=16, temperature=1.0, max_tokens=120
    )
    completion = oai.completions.create(
        model=MODEL,
        prompt="A film:",
        n=16,
        temperature=1.0,
        max_tokens=120,
        extra_body={"structured_outputs": {"json": RECORD}},
    )
    texts = [c.message.content for c in chat.choices] + [c.text for c in completion.choices]
    assert [c.finish_reason for c in chat.choices + completion.choices] == ["stop"] * 32
    for text in texts:
        jsonschema.validate(json.loads(text), RECORD)


def _joined(chunks, text_of) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (text_of(choice) or "")
    return texts


def test_streamed_deltas_join_into_valid_outputs(oai):
    stream = oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=_schema_format(RECORD), n=3, temperature=1.0, max_tokens=120,
        stream=True,
    )  # fmt: skip
    chunks = list(stream)
    finish = {c.index: c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason}
    assert finish == {0: "stop", 1: "stop", 2: "stop"}
    for text in _joined(chunks, lambda c: c.delta.content).values():
        jsonschema.validate(json.loads(text), RECORD)
    regex = r"[A-Z]{2}-[0-9]{3}( [a-z]{1,5}){0,3}"
    stream = oai.completions.create(
        model=MODEL, prompt="Code:", n=3, temperature=1.0, max_tokens=40, stream=True,
        extra_body={"structured_outputs": {"regex": regex}},
    )  # fmt: skip
    texts = _joined(list(stream), lambda c: c.text)
    assert len(texts) == 3 and all(re.fullmatch(regex, t) for t in texts.values()), texts


def test_prefix_cache_hit_through_the_server(embedded_server):
    body = {
        "model": MODEL, "prompt": "A preamble long enough to fill whole blocks of the prefix cache. " * 4,
        "max_tokens": 120, "temperature": 0, "response_format": _schema_format(RECORD),
    }  # fmt: skip
    texts, hits = [], []
    for _ in range(2):
        r = http(embedded_server, "POST", "/v1/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        texts.append(r.json()["choices"][0]["text"])
        hits.append(metrics(embedded_server)["prefix_cache_hits_total"])
    assert hits[1] > hits[0] and texts[0] == texts[1]
    jsonschema.validate(json.loads(texts[1]), RECORD)


BAD_SPECS = [
    ({"structured_outputs": {"regex": "a("}}, "unclosed group"),
    ({"structured_outputs": {"json": {"type": "object", "properties": {"a": {"type": "nope"}}}}}, "nope"),
    ({"structured_outputs": {"json": {"type": "string", "format": "nonesuch"}}}, "nonesuch"),
    ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
    ({"structured_outputs": {"grammar": "start: undefined_rule"}}, "undefined_rule"),
    ({"structured_outputs": {"regex": "[a&&b]"}}, "no output matches it"),
    ({"structured_outputs": {"choice": []}}, "non-empty"),
    ({"structured_outputs": {}}, "exactly one"),
    ({"structured_outputs": {"regexp": "a"}}, "regexp"),
    ({"response_format": {"type": "json_schema"}}, "json_schema is required"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"response_format": _schema_format({"type": "integer", "minimum": 3, "maximum": 1})}, "minimum (3)"),
    ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, "not both"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_bad_specs_are_400s_on_every_route_and_the_server_keeps_serving(embedded_server, route, stream):
    base = {"model": MODEL, "max_tokens": 8, "stream": stream}
    base.update({"messages": MESSAGES} if route == "/v1/chat/completions" else {"prompt": "Hi"})
    for fields, quoted in BAD_SPECS:
        r = http(embedded_server, "POST", route, json={**base, **fields})
        error = r.json()["error"]
        assert r.status_code == 400 and quoted in error["message"] and error["type"], (fields, r.text)
    good = {**base, "stream": False, "structured_outputs": {"choice": ["up", "down"]}}
    r = http(embedded_server, "POST", route, json=good)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert (choice["message"]["content"] if "message" in choice else choice["text"]) in ("up", "down")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _worked_examples() -> list[dict]:
    """Two earlier turns in which the assistant called the tool: with them, the embedded model calls it by itself."""
    turns = []
    for i, (city, result) in enumerate([("Rome", "sunny, 25 C"), ("Oslo", "snow, -3 C")]):
        call = {
            "id": f"call{i}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
        }
        turns += [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call{i}", "content": result},
            {"role": "assistant", "content": f"It is {result} in {city}."},
        ]
    return turns + [{"role": "user", "content": "And in Berlin?"}]


def test_auto_tool_choice_a_call_the_model_writes_itself_is_a_tool_call_never_content(oai):
    """tool_choice "auto" forces nothing: the model (greedy) writes the call in the generic format's <tool_call> block
    by itself. It must come back as a tool call with schema-valid arguments, and no part of the block as content,
    streamed (OpenAI's deltas: index, id and name first, then argument fragments) or not."""
    body = dict(
        model=MODEL, messages=_worked_examples(), tools=[WEATHER], tool_choice="auto", temperature=0, max_tokens=60
    )
    res = oai.chat.completions.create(**body)
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    content, fragments, heads, finish = [], [], [], None
    for chunk in oai.chat.completions.create(**body, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content.append(delta.content or "")
        for part in delta.tool_calls or []:
            assert part.index == 0
            if part.id is not None:
                heads.append((part.id, part.function.name))
            fragments.append(part.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(content) == "" and finish == "tool_calls"
    assert [name for _, name in heads] == ["get_weather"] and fragments[0] == ""  # the head comes before any argument
    assert "".join(fragments) == call.function.arguments
