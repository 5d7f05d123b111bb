"""Tools through the Runner, as mistral.rs's Python API takes them (`tool_schemas`: each tool's JSON text;
`tool_choice`: ToolChoice.Auto / NoTools, or OpenAI's strings and named tool), answered with the server's own
objects; each call checked with jsonschema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from mistralpy import ChatCompletionRequest, Runner, ToolChoice
from mistralpy.errors import InvalidRequestError

from .test_runner import gguf_which

ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
TOOL = {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": ADD}}
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def runner(tiny_llama):
    with Runner(which=gguf_which(tiny_llama)) as r:
        yield r


def _request(**kwargs) -> ChatCompletionRequest:
    fields = {"model": "default", "messages": MESSAGES, "max_tokens": 60, "tool_schemas": [json.dumps(TOOL)]}
    return ChatCompletionRequest(**(fields | kwargs))


def test_runner_tool_schemas_and_tool_choice(runner):
    for choice in ("required", {"type": "function", "function": {"name": "add"}}):
        res = runner.send_chat_completion_request(_request(tool_choice=choice, parallel_tool_calls=False))
        [c] = res.choices
        assert c.finish_reason == "tool_calls" and c.message.content is None
        [call] = c.message.tool_calls
        assert call.function.name == "add"
        jsonschema.validate(json.loads(call.function.arguments), {**ADD, "additionalProperties": False})
    for choice in (ToolChoice.NoTools, ToolChoice.Auto):  # the random model does not call tools by itself
        res = runner.send_chat_completion_request(_request(tool_choice=choice, max_tokens=4, temperature=0))
        assert res.choices[0].message.tool_calls is None and res.choices[0].message.content


def test_runner_streams_tool_calls(runner):
    chunks = runner.send_chat_completion_request(_request(tool_choice="required", stream=True, temperature=0))
    deltas = [d for chunk in chunks for choice in chunk.choices for d in choice.delta.get("tool_calls", [])]
    assert deltas[0]["function"]["name"] == "add" and deltas[0]["id"]
    arguments = "".join(d["function"]["arguments"] for d in deltas if d["index"] == 0)
    jsonschema.validate(json.loads(arguments), ADD)


def test_runner_bad_tools_raise(runner):
    with pytest.raises(InvalidRequestError, match="tool_schemas"):
        runner.send_chat_completion_request(_request(tool_schemas=["{not json"]))
    with pytest.raises(InvalidRequestError, match="not both"):
        runner.send_chat_completion_request(_request(tools=[TOOL]))
