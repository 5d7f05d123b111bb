"""Every optional field of the OpenAI request models accepts an explicit null as "not set": the request parses to
the same model as one that leaves the field out (the openai client and frameworks send null for a caller's None)."""

from __future__ import annotations

import pytest

from mistralpy.server.embedding_protocol import EmbeddingRequest
from mistralpy.server.protocol import ChatCompletionRequest, CompletionRequest

BASES = {
    ChatCompletionRequest: {"messages": [{"role": "user", "content": "hi"}]},
    CompletionRequest: {"prompt": "hi"},
    EmbeddingRequest: {"input": "hi"},
}
CASES = [(cls, name) for cls, base in BASES.items() for name, f in cls.model_fields.items() if not f.is_required()]


def test_the_fields_clients_send_as_null_are_covered():
    chat = {name for cls, name in CASES if cls is ChatCompletionRequest}
    completion = {name for cls, name in CASES if cls is CompletionRequest}
    common = {"n", "stream", "logprobs", "presence_penalty", "frequency_penalty", "stop", "seed", "max_tokens"}
    assert common | {"tools", "tool_choice", "top_logprobs"} <= chat
    assert common | {"echo"} <= completion


@pytest.mark.parametrize("cls, name", CASES, ids=[f"{cls.__name__}.{name}" for cls, name in CASES])
def test_null_is_the_default(cls, name):
    base = BASES[cls]
    assert cls.model_validate({**base, name: None}) == cls.model_validate(base)
    assert cls(**base, **{name: None}) == cls(**base)  # built in Python too (the Runner's way in)


def test_required_fields_stay_required():
    with pytest.raises(ValueError):
        CompletionRequest.model_validate({"prompt": None})
    with pytest.raises(ValueError):
        ChatCompletionRequest.model_validate({"messages": None})
