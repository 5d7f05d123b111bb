"""Anthropic's Messages API against a live server, through the `anthropic` client: the same conversation through
/v1/chat/completions (OpenAI's route, greedy) is the oracle for the text, stop and usage; /tokenize for count_tokens;
jsonschema for tool inputs. Errors come back in Anthropic's shape, as the client's own exception classes."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest

from .server_process import KEY, MODEL, http

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
    },
}
SYSTEM = "You are terse."
GREEDY = {"temperature": 0}
ONE_CALL = {
    "type": "any",
    "disable_parallel_tool_use": True,
}  # else the random model may go on calling  # Anthropic's sampling fields, which its newest client no longer names
MESSAGES = [{"role": "user", "content": "Say something about the sea."}]


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)


def _openai(server, max_tokens: int, **body) -> dict:
    messages = [{"role": "system", "content": SYSTEM}, *MESSAGES]
    fields = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": max_tokens, **body}
    r = http(server, "POST", "/v1/chat/completions", json=fields)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_message_equals_the_chat_completion_of_the_same_conversation(server, claude):
    oracle = _openai(server, 12)
    msg = claude.messages.create(model=MODEL, system=SYSTEM, messages=MESSAGES, max_tokens=12, extra_body=GREEDY)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    [block] = msg.content
    assert block.type == "text" and block.text == oracle["choices"][0]["message"]["content"]
    expected = {"length": "max_tokens", "stop": "end_turn"}[oracle["choices"][0]["finish_reason"]]
    assert msg.stop_reason == expected and msg.stop_sequence is None
    assert msg.usage.input_tokens == oracle["usage"]["prompt_tokens"]
    assert msg.usage.output_tokens == oracle["usage"]["completion_tokens"]


def test_a_stop_sequence_is_reported_as_anthropic_does(server, claude):
    text = _openai(server, 12)["choices"][0]["message"]["content"]
    stop = text[len(text) // 2 :][:3]
    msg = claude.messages.create(
        model=MODEL, system=SYSTEM, messages=MESSAGES, max_tokens=12, extra_body=GREEDY, stop_sequences=[stop]
    )
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == stop
    assert msg.content[0].text == text[: text.index(stop)]


def test_the_stream_carries_the_same_message(claude):
    body = dict(model=MODEL, system=SYSTEM, messages=MESSAGES, max_tokens=12, extra_body=GREEDY)
    whole = claude.messages.create(**body)
    with claude.messages.stream(**body) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.content[0].text == whole.content[0].text
    assert (final.stop_reason, final.usage.output_tokens) == (whole.stop_reason, whole.usage.output_tokens)
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_tool_use_and_a_tool_result_round_trip(claude):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    msg = claude.messages.create(
        model=MODEL, messages=question, tools=[WEATHER], tool_choice=ONE_CALL, max_tokens=80, extra_body=GREEDY
    )
    assert msg.stop_reason == "tool_use"
    [use] = [b for b in msg.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id
    jsonschema.validate(use.input, WEATHER["input_schema"])

    with claude.messages.stream(
        model=MODEL, messages=question, tools=[WEATHER], tool_choice=ONE_CALL, max_tokens=80, extra_body=GREEDY
    ) as stream:
        partial = "".join(
            e.delta.partial_json
            for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        )
        streamed = stream.get_final_message()
    assert json.loads(partial) == use.input and streamed.stop_reason == "tool_use"

    history = question + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C and sunny"}]},
    ]
    answer = claude.messages.create(model=MODEL, messages=history, tools=[WEATHER], max_tokens=8, extra_body=GREEDY)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.content


def test_output_config_format_constrains_the_text_to_the_schema(claude):
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    msg = claude.messages.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=30,
        extra_body={"temperature": 0},  # a sampled integer ran past max_tokens in CI: the JSON was cut short
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    jsonschema.validate(json.loads(msg.content[0].text), schema)


def test_count_tokens_equals_the_rendered_prompt(server, claude):
    counted = claude.messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)
    messages = [{"role": "system", "content": SYSTEM}, *MESSAGES]
    r = http(server, "POST", "/tokenize", json={"model": MODEL, "messages": messages, "add_generation_prompt": True})
    assert r.status_code == 200, r.text
    assert counted.input_tokens == r.json()["count"] > 0


@pytest.mark.parametrize(
    "body, status, kind, words",
    [
        ({"messages": MESSAGES}, 400, "invalid_request_error", "max_tokens"),
        ({"messages": MESSAGES, "max_tokens": 4, "model": "claude-nope"}, 404, "not_found_error", "claude-nope"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}], "max_tokens": 4},
            400,
            "invalid_request_error",
            "image",
        ),
        ({"messages": MESSAGES, "max_tokens": 4, "temperature": 1.5}, 400, "invalid_request_error", "temperature"),
        (
            {"messages": MESSAGES, "max_tokens": 4, "thinking": {"type": "enabled"}},
            400,
            "invalid_request_error",
            "thinking",
        ),
        (
            {"messages": MESSAGES, "max_tokens": 4, "tool_choice": {"type": "tool"}},
            400,
            "invalid_request_error",
            "name",
        ),
    ],
)
def test_errors_come_back_in_anthropic_shape_and_the_server_keeps_serving(server, claude, body, status, kind, words):
    # x-api-key, as Anthropic's clients send the key
    r = http(server, "POST", "/v1/messages", key=None, headers={"x-api-key": KEY}, json={"model": MODEL, **body})
    assert r.status_code == status, r.text
    error = r.json()
    assert error["type"] == "error" and error["error"]["type"] == kind and words in error["error"]["message"]
    assert claude.messages.create(model=MODEL, messages=MESSAGES, max_tokens=2).content


def test_a_wrong_key_is_an_anthropic_authentication_error(server):
    with pytest.raises(anthropic.AuthenticationError) as raised:
        anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, messages=MESSAGES, max_tokens=2
        )
    assert raised.value.body["error"]["type"] == "authentication_error"
