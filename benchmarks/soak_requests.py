"""What the soak's clients send: a fixed pool of distinct valid requests (temperature 0, bounded max_tokens) and a
catalogue of bad inputs, each with the status the server must answer it with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROMPTS = (
    "Tell me about cats.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis to a child.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a recipe for pancakes.",
    "How do bicycles stay upright?",
    "Describe a sunset over the mountains.",
    "What does a compiler do?",
    "Summarize the plot of a detective story.",
    "Name five animals that live in the desert.",
    "How many legs does a spider have?",
    "Write a short poem about autumn leaves.",
    "What is the difference between weather and climate?",
    "Suggest a name for a friendly robot.",
    "How does a refrigerator keep food cold?",
    "Tell me a fun fact about octopuses.",
    "What should I pack for a weekend hike?",
    "Explain what a prime number is.",
    "Describe the taste of a lemon.",
    "Why do we sleep?",
    "What is the tallest mountain on Earth?",
    "Give three tips for learning a new language.",
    "How do bees make honey?",
    "Write the opening line of a fairy tale.",
    "What makes a good friend?",
    "Explain gravity in one sentence.",
    "Describe your ideal breakfast.",
    "What is the speed of light?",
    "How do plants drink water?",
    "Invent a new holiday and describe it.",
)
MAX_TOKENS = (8, 16, 24, 32)
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@dataclass(frozen=True)
class ValidRequest:
    """One distinct request of the pool; its text at temperature 0 must not depend on how it was scheduled."""

    key: str
    path: str
    body: dict[str, Any] = field(hash=False)

    def json(self, stream: bool, **extra: Any) -> dict[str, Any]:
        return {**self.body, "stream": stream, **extra}


def valid_pool(num_prompts: int, model: str) -> list[ValidRequest]:
    """Each of the first num_prompts prompts as a chat and as a text completion."""
    pool = []
    for i, prompt in enumerate(PROMPTS[:num_prompts]):
        common = {"model": model, "temperature": 0, "max_tokens": MAX_TOKENS[i % len(MAX_TOKENS)]}
        pool.append(ValidRequest(f"chat/{i}", CHAT, {**common, "messages": [{"role": "user", "content": prompt}]}))
        pool.append(ValidRequest(f"completion/{i}", COMPLETIONS, {**common, "prompt": prompt}))
    return pool


def answer_texts(path: str, body: dict[str, Any]) -> list[str]:
    """The text of each choice of a non-streamed answer."""
    choices = sorted(body["choices"], key=lambda c: c["index"])
    return [c["message"]["content"] if path == CHAT else c["text"] for c in choices]


def chunk_text(path: str, choice: dict[str, Any]) -> str:
    """The text a streamed chunk's choice adds."""
    if path == CHAT:
        return choice.get("delta", {}).get("content") or ""
    return choice.get("text") or ""


@dataclass(frozen=True)
class BadInput:
    """A request the server must refuse with `expect`. `announce`: send only headers announcing this many body
    bytes (over a raw connection), as a client about to send more than the server takes."""

    name: str
    path: str
    content: bytes = b""
    expect: int = 400
    method: str = "POST"
    content_type: str = "application/json"
    announce: int | None = None


MIB = 1024 * 1024


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def bad_inputs(model: str, max_body_bytes: int) -> list[BadInput]:
    msg = [{"role": "user", "content": "Hi"}]
    chat = {"model": model, "messages": msg, "max_tokens": 4, "temperature": 0}
    comp = {"model": model, "prompt": "Hi", "max_tokens": 4, "temperature": 0}
    cases = [
        BadInput("malformed_json", CHAT, b'{"messages": [{"role": "user", "content": "Hi"}'),
        BadInput("not_an_object", CHAT, b"[1, 2, 3]"),
        BadInput("empty_body", COMPLETIONS, b""),
        BadInput("invalid_utf8", COMPLETIONS, b'{"prompt": "\xff\xfe\xfd", "max_tokens": 4}'),
        BadInput("lone_surrogate", COMPLETIONS, b'{"prompt": "a\\ud800b", "max_tokens": 4}'),
        BadInput("text_plain", CHAT, _json(chat), content_type="text/plain"),
        BadInput("unknown_field", CHAT, _json({**chat, "tools_choice": "auto"})),
        BadInput("string_temperature", CHAT, _json({**chat, "temperature": "0"})),
        BadInput("float_max_tokens", COMPLETIONS, _json({**comp, "max_tokens": 1.5})),
        BadInput("messages_not_a_list", CHAT, _json({**chat, "messages": "Hi"})),
        BadInput("unknown_role", CHAT, _json({**chat, "messages": [{"role": "wizard", "content": "Hi"}]})),
        BadInput(
            "image_part", CHAT, _json({**chat, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
        ),
        BadInput("negative_max_tokens", COMPLETIONS, _json({**comp, "max_tokens": -1})),
        BadInput("negative_temperature", COMPLETIONS, _json({**comp, "temperature": -1})),
        BadInput("huge_max_tokens", COMPLETIONS, _json({**comp, "max_tokens": 10**30})),
        BadInput("huge_float", COMPLETIONS, b'{"prompt": "Hi", "max_tokens": 4, "top_p": 1e400}'),
        BadInput("deep_nesting", CHAT, b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        BadInput("n_over_limit", COMPLETIONS, _json({**comp, "n": 1000})),
        BadInput("too_many_stops", COMPLETIONS, _json({**comp, "stop": [f"s{i}" for i in range(17)]})),
        BadInput("long_stop", CHAT, _json({**chat, "stop": "x" * 200})),
        BadInput("logit_bias_over_limit", CHAT, _json({**chat, "logit_bias": {str(i): 1 for i in range(1025)}})),
        BadInput("top_logprobs_over_limit", CHAT, _json({**chat, "logprobs": True, "top_logprobs": 21})),
        BadInput("stream_options_without_stream", CHAT, _json({**chat, "stream_options": {"include_usage": True}})),
        BadInput("unknown_model", CHAT, _json({**chat, "model": "no-such-model"}), expect=404),
        BadInput("token_out_of_vocab", COMPLETIONS, _json({**comp, "prompt": [10**9]})),
        BadInput("detokenize_out_of_vocab", "/detokenize", _json({"model": model, "tokens": [10**9]})),
        BadInput("tokenize_both_inputs", "/tokenize", _json({"model": model, "prompt": "Hi", "messages": msg})),
        BadInput("unknown_route", "/v1/nothing", _json(comp), expect=404),
        BadInput("wrong_method", COMPLETIONS, method="GET", expect=405),
        BadInput("body_over_limit", CHAT, expect=413, announce=max_body_bytes + 1),
    ]
    return cases


def big_prompt_body(model: str) -> bytes:
    """A 1 MB prompt: past any context length, refused (400) after it is read and tokenized."""
    return _json({"model": model, "prompt": "lorem ipsum " * (MIB // 12), "max_tokens": 4, "temperature": 0})


def padded_body(request: ValidRequest) -> bytes:
    """A valid request made a 1 MB body by whitespace between its JSON tokens: answered like the request itself."""
    text = json.dumps(request.json(False))
    return (text[:-1] + " " * MIB + "}").encode()
