"""Tool calling over HTTP against a live server on the tiny random model (its template, SmolLM2's, has no tool
support: the generic format). The model cannot call tools by itself; tool_choice "required" or a named tool makes
it, through the grammar. Every call is checked with json + jsonschema (the oracle), streamed calls against the
unstreamed ones, and LangChain's ChatOpenAI.bind_tools reads them."""

from __future__ import annotations

import json

import jsonschema
import pytest

from .server_process import KEY, MODEL, http

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"],
}
ADD = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"type": "integer", "minimum": -999, "maximum": 999},
    },
    "required": ["a", "b"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": ADD}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def _check_call(call) -> dict:
    """The call's arguments, checked against its tool's schema (no undeclared keys either)."""
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, {**SCHEMAS[call.function.name], "additionalProperties": False})
    return args


def test_required_makes_a_valid_call_every_time(client):
    """50 samples at temperature 1: every one a call whose arguments validate (one call each: with parallel calls
    allowed, the random model may go on calling until max_tokens)."""
    res = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, n=50,
        temperature=1.0, max_tokens=120,
    )  # fmt: skip
    for choice in res.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.type == "function" and call.id.startswith("call_")
            _check_call(call)


def test_named_tool_and_no_parallel_calls(client):
    choice = {"type": "function", "function": {"name": "add"}}
    res = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False, n=6,
        temperature=1.0, max_tokens=80,
    )  # fmt: skip
    for c in res.choices:
        assert c.finish_reason == "tool_calls"
        assert [call.function.name for call in c.message.tool_calls] == ["add"]
        _check_call(c.message.tool_calls[0])


def test_streamed_calls_add_up_to_the_unstreamed_ones(client):
    kwargs = dict(model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120)
    whole = client.chat.completions.create(**kwargs).choices[0]
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            assert not choice.delta.content  # nothing of a call leaks into the content
            for d in choice.delta.tool_calls or []:
                if d.id is not None:  # the first delta of a call: its id, type and name
                    assert d.index not in calls and d.type == "function" and d.function.name
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
                calls[d.index]["arguments"] += d.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == [
        (t.function.name, t.function.arguments) for t in whole.message.tool_calls
    ]


def test_a_conversation_round_trip(client):
    """call -> tool result -> answer, through the generic format's history."""
    res = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=80
    )
    call = res.choices[0].message.tool_calls[0]
    history = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=8)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_tool_choice_none_and_auto_answer_in_text(client):
    for tool_choice in ("none", "auto"):
        res = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=tool_choice, temperature=0, max_tokens=6
        )
        # the tiny random model never writes a call by itself: its answer is text
        assert res.choices[0].message.tool_calls is None
        assert res.choices[0].message.content


@pytest.mark.parametrize(
    "body, words",
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "'nope' is not one"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [{"type": "retrieval"}]}, "only 'function' tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "function.name"),
        ({"tools": TOOLS + TOOLS[:1]}, "unique"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "object"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"type": "string", "pattern": "("}}},
                        },
                    }
                ],
                "tool_choice": "required",
            },  # fmt: skip
            "llguidance",
        ),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "use one of them",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"chat_template_kwargs": {"messages": []}}, "may not set messages"),
        ({"chat_template_kwargs": {"enable_thinking": True}, "enable_thinking": False}, "not both"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
                        ],
                    }
                ]
            },  # fmt: skip
            "not JSON",
        ),
    ],
)
def test_bad_tool_requests_are_400s(server, body, words):
    r = http(server, "POST", "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **body})
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]
    ok = http(server, "POST", "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 2})
    assert ok.status_code == 200


def test_langchain_bind_tools(server):
    from typing import Literal

    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    class Weather(BaseModel):
        city: str = Field(max_length=10)  # bounded: the random model would write on until max_tokens
        unit: Literal["C", "F"]

    @tool(args_schema=Weather)
    def get_weather(city: str, unit: str) -> str:
        """Weather now."""
        return "sunny"

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key=KEY, model=MODEL, temperature=1.0, max_tokens=100)
    for tool_choice in ("get_weather", "any"):  # a named tool; "any" is sent as "required"
        bound = llm.bind_tools([get_weather], tool_choice=tool_choice, parallel_tool_calls=False)
        message = bound.invoke("Weather in Oslo?")
        assert message.tool_calls and message.response_metadata["finish_reason"] == "tool_calls"
        for call in message.tool_calls:
            assert call["name"] == "get_weather"
            Weather.model_validate(call["args"])
