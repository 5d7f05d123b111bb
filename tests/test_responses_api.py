"""OpenAI's Responses API against a live server through the `openai` client. The oracle for each response's text and
usage is /v1/chat/completions on the same conversation (greedy); tool arguments and JSON outputs are checked with
jsonschema; the event stream is checked for OpenAI's order and its single terminal event."""

from __future__ import annotations

import json
import time

import jsonschema
import openai
import pytest

from .server_process import MODEL, http

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOL = {"type": "function", "name": "get_weather", "description": "Weather now", "parameters": WEATHER}


def _chat(server, messages: list[dict], max_tokens: int) -> dict:
    body = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
    r = http(server, "POST", "/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_response_equals_the_chat_completion_of_its_conversation(server, client):
    res = client.responses.create(model=MODEL, instructions="Be brief.", input="Hi", max_output_tokens=6, temperature=0)
    oracle = _chat(server, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], 6)
    assert res.object == "response" and res.output_text == oracle["choices"][0]["message"]["content"]
    finish = oracle["choices"][0]["finish_reason"]
    assert res.status == {"length": "incomplete", "stop": "completed"}[finish]
    if finish == "length":
        assert res.incomplete_details.reason == "max_output_tokens"
    assert (res.usage.input_tokens, res.usage.output_tokens) == (
        oracle["usage"]["prompt_tokens"],
        oracle["usage"]["completion_tokens"],
    )


def test_the_event_stream_builds_the_same_response(client):
    body = dict(model=MODEL, input=[{"role": "user", "content": "Hello"}], max_output_tokens=8, temperature=0)
    whole = client.responses.create(**body)
    with client.responses.stream(**body) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    final = events[-1].response  # the client's get_final_response() takes only a completed one
    terminal = [k for k in kinds if k in ("response.completed", "response.incomplete", "response.failed")]
    assert kinds[:2] == ["response.created", "response.in_progress"] and terminal == [kinds[-1]]
    assert kinds.index("response.output_item.added") < kinds.index("response.output_text.delta")
    assert final.output_text == whole.output_text and final.status == whole.status


def test_previous_response_id_continues_the_conversation_and_store_false_is_not_kept(server, client):
    first = client.responses.create(model=MODEL, input="One", max_output_tokens=5, temperature=0)
    second = client.responses.create(
        model=MODEL, input="Two", previous_response_id=first.id, max_output_tokens=5, temperature=0
    )
    history = [
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "Two"},
    ]
    assert second.output_text == _chat(server, history, 5)["choices"][0]["message"]["content"]
    assert client.responses.retrieve(first.id).output_text == first.output_text
    unstored = client.responses.create(model=MODEL, input="x", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError, match="Previous response"):
        client.responses.create(model=MODEL, input="y", previous_response_id=unstored.id, max_output_tokens=2)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_function_calls_and_their_outputs(client):
    res = client.responses.create(
        model=MODEL, input="Weather in Oslo?", tools=[TOOL], tool_choice="required", parallel_tool_calls=False,
        max_output_tokens=60, temperature=0,
    )  # fmt: skip
    [call] = [item for item in res.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    with client.responses.stream(
        model=MODEL, input="Weather in Oslo?", tools=[TOOL], tool_choice="required", parallel_tool_calls=False,
        max_output_tokens=60, temperature=0,
    ) as stream:  # fmt: skip
        deltas = "".join(e.delta for e in stream if e.type == "response.function_call_arguments.delta")
        streamed = stream.get_final_response()
    assert deltas == call.arguments and [i.arguments for i in streamed.output if i.type == "function_call"] == [deltas]
    answer = client.responses.create(
        model=MODEL, previous_response_id=res.id, tools=[TOOL], max_output_tokens=4,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )  # fmt: skip
    assert answer.status in ("completed", "incomplete")


def test_text_format_json_schema(client):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    res = client.responses.create(
        model=MODEL, input="Answer.", max_output_tokens=20,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
    )  # fmt: skip
    jsonschema.validate(json.loads(res.output_text), schema)


def test_background_responses_run_and_can_be_cancelled(client):
    done = client.responses.create(model=MODEL, input="Hi", background=True, max_output_tokens=6, temperature=0)
    assert done.status in ("queued", "in_progress")
    for _ in range(200):
        polled = client.responses.retrieve(done.id)
        if polled.status not in ("queued", "in_progress"):
            break
        time.sleep(0.05)
    alone = client.responses.create(model=MODEL, input="Hi", max_output_tokens=6, temperature=0)
    assert polled.status == alone.status and polled.output_text == alone.output_text
    long = client.responses.create(model=MODEL, input="Go on", background=True, max_output_tokens=400)
    assert client.responses.cancel(long.id).status == "cancelled"
    assert client.responses.retrieve(long.id).status == "cancelled"


@pytest.mark.parametrize(
    "body, words",
    [
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"type": "image", "url": "x"}]}, "image"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"input": "x", "background": True, "stream": True}, "background"),
    ],
)
def test_bad_requests_are_400s(server, body, words):
    r = http(server, "POST", "/v1/responses", json={"model": MODEL, **body})
    assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
