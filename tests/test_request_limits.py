"""RequestLimits (server/limits.py): each limit just under passes, just over is a 400 (413 for the body) whose message
names it; the defaults as served; the Runner raises the same errors as InvalidRequestError."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from mistralpy import ChatCompletionRequest, CompletionRequest, Runner, Which
from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.errors import InvalidRequestError, LimitExceededError
from mistralpy.server.app import create_app
from mistralpy.server.limits import RequestLimits

CHAT_URL, COMPLETIONS_URL = "/v1/chat/completions", "/v1/completions"
MESSAGES = [{"role": "user", "content": "Hello there"}]
SMALL = RequestLimits(
    max_body_bytes=4000, max_prompts=3, max_n=3, max_sequences=6, max_stop_strings=2, max_stop_length=5,
    max_logit_bias=2, max_logprobs=3, max_messages=3,
)  # fmt: skip


def chat_prompt_length(tokenizer_dir, messages) -> int:
    """The rendered conversation's length, by transformers (the oracle)."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(hf.encode(text, add_special_tokens=False))


def app_client(tiny_llama, limits: RequestLimits | None):
    engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[2]), dtype="float32"))
    return TestClient(create_app(engine, "m", limits=limits))


@pytest.fixture(scope="module")
def chat_tokens(tokenizer_dir) -> int:
    return chat_prompt_length(tokenizer_dir, MESSAGES)


@pytest.fixture(scope="module")
def small(tiny_llama, chat_tokens):
    """The app with small limits; max_request_tokens is exactly two of the chat's prompts."""
    limits = RequestLimits(**{**SMALL.__dict__, "max_request_tokens": 2 * chat_tokens})
    with app_client(tiny_llama, limits) as client:
        yield client


@pytest.fixture(scope="module")
def default(tiny_llama):
    with app_client(tiny_llama, None) as client:
        yield client


def chat(**kwargs):
    return CHAT_URL, {"messages": MESSAGES, "max_tokens": 1, **kwargs}


def completion(**kwargs):
    return COMPLETIONS_URL, {"prompt": "Hi", "max_tokens": 1, **kwargs}


def biases(k: int) -> dict[str, float]:
    return {str(token): -1.0 for token in range(10, 10 + k)}


# (limit, request just under or at it, request one over it, the message one over it)
SMALL_CASES = [
    ("max_n", completion(n=3), completion(n=4), "n is 4; the limit is 3 (max_n)"),
    ("max_stop_strings", chat(stop=["a", "b"]), chat(stop=["a", "b", "c"]), "stop has 3 strings; the limit is 2"),
    ("max_stop_length", completion(stop="abcde"), completion(stop=["a", "abcdef"]), "stop[1] has 6 characters; the"
     " limit is 5"),
    ("max_logit_bias", chat(logit_bias=biases(2)), chat(logit_bias=biases(3)), "logit_bias has 3 entries; the limit"
     " is 2"),
    ("max_logprobs", chat(logprobs=True, top_logprobs=3), chat(logprobs=True, top_logprobs=4), "top_logprobs is 4;"
     " the limit is 3"),
    ("max_logprobs", completion(logprobs=3), completion(logprobs=4), "logprobs is 4; the limit is 3"),
    ("max_messages", chat(messages=MESSAGES * 3), chat(messages=MESSAGES * 4), "messages has 4 messages; the limit"
     " is 3"),
    ("max_prompts", completion(prompt=["a", "b", "c"]), completion(prompt=["a", "b", "c", "d"]), "prompt has 4"
     " prompts; the limit is 3"),
    ("max_sequences", completion(prompt=["a", "b", "c"], n=2), completion(prompt=["a", "b", "c"], n=3), "the request"
     " asks for 9 sequences (3 prompts x n=3); the limit is 6"),
]  # fmt: skip


@pytest.mark.parametrize("limit, under, over, message", SMALL_CASES, ids=[c[0] for c in SMALL_CASES])
def test_each_limit_just_under_passes_just_over_is_a_400_naming_it(small, limit, under, over, message):
    assert small.post(under[0], json=under[1]).status_code == 200
    r = small.post(over[0], json=over[1])
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "limit_exceeded", r.text
    assert error["message"].startswith(message) and error["message"].endswith(f"({limit})")


def test_request_tokens_count_prompt_tokens_times_n(small, chat_tokens):
    limit = 2 * chat_tokens
    half = limit // 2
    cases = [  # (request, prompt tokens x n) around the limit
        (chat(n=2), limit),
        (chat(n=3), 3 * chat_tokens),
        (completion(prompt=[[5] * half, [6] * half]), limit),
        (completion(prompt=[[5] * half, [6] * (half + 1)]), limit + 1),
        (completion(prompt=[5] * half, n=2), limit),
        (completion(prompt=[5] * (half + 1), n=2), limit + 2),
    ]
    for (path, body), total in cases:
        r = small.post(path, json=body)
        if total <= limit:
            assert r.status_code == 200, r.text
        else:
            message = r.json()["error"]["message"]
            assert r.status_code == 400 and f"has {total} prompt tokens" in message, r.text
            assert message.endswith(f"the limit is {limit} (max_request_tokens)")


def test_body_size(small):
    body = json.dumps(completion()[1]).encode()
    headers = {"Content-Type": "application/json"}
    assert small.post(COMPLETIONS_URL, content=body.ljust(4000), headers=headers).status_code == 200
    r = small.post(COMPLETIONS_URL, content=body.ljust(4001), headers=headers)
    assert r.status_code == 413
    assert r.json()["error"]["message"] == "the request body has 4001 bytes; the limit is 4000 (max_body_bytes)"


def test_tokenize_and_detokenize_are_limited_too(small, chat_tokens):
    assert small.post("/tokenize", json={"messages": MESSAGES * 3}).status_code == 200
    r = small.post("/tokenize", json={"messages": MESSAGES * 4})
    assert r.status_code == 400 and "(max_messages)" in r.json()["error"]["message"]
    assert small.post("/detokenize", json={"tokens": [5] * (2 * chat_tokens)}).status_code == 200
    r = small.post("/detokenize", json={"tokens": [5] * (2 * chat_tokens + 1)})
    assert r.status_code == 400 and "(max_request_tokens)" in r.json()["error"]["message"]


# Defaults: (request one over each, the limit it names); then the largest requests that still pass.
DEFAULT_OVER = [
    (chat(n=129), "max_n"),
    (chat(stop=[str(i) for i in range(17)]), "max_stop_strings"),
    (chat(stop="x" * 129), "max_stop_length"),
    (chat(logit_bias=biases(1025)), "max_logit_bias"),
    (chat(logprobs=True, top_logprobs=21), "max_logprobs"),
    (completion(logprobs=21), "max_logprobs"),
    (chat(messages=MESSAGES * 2049), "max_messages"),
    (completion(prompt=[[1]] * 129), "max_prompts"),
    (completion(prompt=[[1]] * 17, n=128), "max_sequences"),
    (
        completion(prompt=[[1] * 128] * 15 + [[1] * 129], n=128),
        "max_request_tokens",
    ),  # (15 x 128 + 129) x 128 = 262,272
]
DEFAULT_UNDER = [
    chat(n=128),
    chat(stop=["x" * 128] * 16),
    chat(logit_bias=biases(1024)),
    chat(logprobs=True, top_logprobs=20),
    completion(logprobs=20),
    completion(prompt=[[1]] * 128),
    completion(prompt=[[1]] * 16, n=128),
]


@pytest.mark.parametrize("request_, limit", DEFAULT_OVER, ids=[c[1] for c in DEFAULT_OVER])
def test_default_limits(default, request_, limit):
    path, body = request_
    r = default.post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["message"].endswith(f"({limit})"), r.text


def test_default_limits_just_under(default):
    for path, body in DEFAULT_UNDER:
        assert default.post(path, json=body).status_code == 200


def test_limits_are_positive_integers():
    with pytest.raises(InvalidRequestError, match="max_n must be a positive integer"):
        RequestLimits(max_n=0)
    with pytest.raises(InvalidRequestError, match="max_logprobs must be at most 20"):
        RequestLimits(max_logprobs=21)


def test_runner_raises_the_servers_errors(tiny_llama, default):
    gguf = tiny_llama[2]
    which = Which.GGUF(quantized_model_id=str(gguf.parent), quantized_filename=gguf.name, dtype="f32")
    requests = [(ChatCompletionRequest, chat(stop=[str(i) for i in range(17)])[1]),
                (CompletionRequest, completion(prompt=[[1]] * 129)[1]),
                (ChatCompletionRequest, chat(n=129)[1])]  # fmt: skip
    with Runner(which=which) as runner:
        for kind, body in requests:
            send = (
                runner.send_chat_completion_request if kind is ChatCompletionRequest else runner.send_completion_request
            )
            with pytest.raises(LimitExceededError) as raised:
                send(kind(**body))
            assert isinstance(raised.value, InvalidRequestError)
            path = CHAT_URL if kind is ChatCompletionRequest else COMPLETIONS_URL
            assert str(raised.value) == default.post(path, json=body).json()["error"]["message"]
