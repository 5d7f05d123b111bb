"""`mistralpy serve` as users run it: a live subprocess driven by the real `openai` client (and raw httpx)."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from . import machine, penalty_oracle
from .server_process import KEY, MODEL, http, metrics

CHAT = [{"role": "user", "content": "Hello there"}]


def test_models_health_version(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).max_model_len == 512
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    assert http(server, "GET", "/health", key=None).status_code == 200
    version = http(server, "GET", "/version").json()
    assert version["version"] and version["isa"] == machine.ISA_LEVEL
    assert version["native_kernels"] == machine.CAN_BUILD_NATIVE  # the session built them; the server loaded them


def test_chat_stream_equals_non_stream_and_usage_counts(server, client):
    kwargs = dict(model=MODEL, messages=CHAT, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kwargs)
    choice = full.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason == "length"
    prompt_ids = http(server, "POST", "/tokenize", json={"messages": CHAT}).json()["tokens"]
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (len(prompt_ids), 12)
    assert full.usage.total_tokens == len(prompt_ids) + 12
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and _counts(chunks[-1].usage) == _counts(full.usage)  # cached_tokens may grow
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_logprobs(client):
    out = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = out.choices[0].logprobs.content
    assert len(content) == 5 and "".join(t.token for t in content) == out.choices[0].message.content
    for t in content:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob) and t.logprob <= 0


def test_completions_echo_logprobs(client):
    kwargs = dict(model=MODEL, prompt="Hello world", max_tokens=5, temperature=0, echo=True, logprobs=2)
    out = client.completions.create(**kwargs)
    choice, usage = out.choices[0], out.usage
    assert choice.text.startswith("Hello world") and len(choice.text) > len("Hello world")
    lp = choice.logprobs
    assert len(lp.tokens) == usage.prompt_tokens + usage.completion_tokens == usage.total_tokens
    assert "".join(lp.tokens) == choice.text and lp.text_offset[0] == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:]) and all(len(t) in (2, 3) for t in lp.top_logprobs[1:])
    streamed = list(client.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == choice.text
    assert sum((c.choices[0].logprobs.tokens for c in streamed if c.choices[0].logprobs), []) == lp.tokens
    assert streamed[-1].choices[0].finish_reason == "length"


def test_completions_token_prompts_and_n(client):
    ids = client.completions.create(
        model=MODEL, prompt=[[1, 2, 3], [4, 5]], max_tokens=3, n=2, temperature=0, extra_body={"ignore_eos": True}
    )
    assert [c.index for c in ids.choices] == [0, 1, 2, 3] and ids.usage.prompt_tokens == 5
    assert ids.choices[0].text == ids.choices[1].text and ids.usage.completion_tokens == 12


def test_n_and_seed_reproducible(client):
    kwargs = dict(model=MODEL, messages=CHAT, max_tokens=8, temperature=1.0, n=2)
    a = client.chat.completions.create(**kwargs, seed=7)
    b = client.chat.completions.create(**kwargs, seed=7)
    c = client.chat.completions.create(**kwargs, seed=8)
    texts = [ch.message.content for ch in a.choices]
    assert [ch.index for ch in a.choices] == [0, 1] and texts[0] != texts[1]
    assert [ch.message.content for ch in b.choices] == texts and [ch.message.content for ch in c.choices] != texts
    chunks = list(client.chat.completions.create(**kwargs, seed=7, stream=True))
    for i in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == i]
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "length"
        assert "".join(ch.delta.content or "" for ch in mine) == texts[i]


def test_stop_strings(client):
    kwargs = dict(model=MODEL, messages=CHAT, max_tokens=16, temperature=0)
    text = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = text[6:9]
    out = client.chat.completions.create(**kwargs, stop=[stop, "never-generated"])
    assert out.choices[0].message.content == text[: text.find(stop)] and out.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(**kwargs, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == out.choices[0].message.content


def test_tokenize_detokenize_round_trip(server):
    text = "The quick brown fox, 123!"
    tok = http(server, "POST", "/tokenize", json={"model": MODEL, "prompt": text, "return_token_strs": True}).json()
    assert tok["count"] == len(tok["tokens"]) == len(tok["token_strs"]) and tok["max_model_len"] == 512
    detok = http(server, "POST", "/detokenize", json={"tokens": tok["tokens"]}).json()
    assert detok == {"prompt": text, "content": text}  # vLLM's name and llama.cpp's


def test_concurrent_streams_share_the_engine(server):
    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Question {i}"}],
            max_tokens=10 + i,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = [c async for c in stream]
        return [c.choices[0].finish_reason for c in chunks if c.choices][-1], chunks[-1].usage.completion_tokens

    async def run_all() -> list[tuple[str, int]]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(16)))

    assert asyncio.run(run_all()) == [("length", 10 + i) for i in range(16)]
    assert metrics(server)["max_batch_size"] > 1  # the requests were batched together


def _wait_idle(server, aborted_before: float) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while True:
        m = metrics(server)
        idle = m["num_requests_running"] == m["num_requests_waiting"] == m["kv_cache_usage_perc"] == 0
        if (idle and m['request_finished_total{reason="abort"}'] > aborted_before) or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def test_client_disconnect_aborts_and_frees_kv(server):
    aborted = metrics(server)['request_finished_total{reason="abort"}']
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 480, "n": 4, "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, headers=headers, timeout=30) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: {")
    m = _wait_idle(server, aborted)
    assert m['request_finished_total{reason="abort"}'] == aborted + 1 and m["kv_cache_usage_perc"] == 0
    with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up is noticed too
        http(server, "POST", "/v1/completions", json={**body, "stream": False}, timeout=0.3)
    m = _wait_idle(server, aborted + 1)
    assert m['request_finished_total{reason="abort"}'] == aborted + 2 and m["kv_cache_usage_perc"] == 0


def test_chat_message_forms(server, client):
    """Text parts are joined, `developer` is rendered as `system`, `name` is accepted."""
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a\nb"}]
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "bob"},
    ]
    ids = [http(server, "POST", "/tokenize", json={"messages": m}).json()["tokens"] for m in (plain, parts)]
    assert ids[0] == ids[1]
    outs = [
        client.chat.completions.create(model=MODEL, messages=m, max_tokens=4, temperature=0) for m in (plain, parts)
    ]
    assert outs[0].choices[0].message.content == outs[1].choices[0].message.content
    assert outs[0].usage.prompt_tokens == len(ids[0])


def test_sampling_extensions(client):
    def complete(**extra):
        out = client.completions.create(model=MODEL, prompt="Hello", max_tokens=6, temperature=0.0, extra_body=extra)
        return out.choices[0], out.usage.completion_tokens

    greedy, _ = complete()
    assert complete(temperature=1.0, top_k=1)[0].text == greedy.text  # top_k=1 is greedy
    assert complete(temperature=1.0, min_p=1.0)[0].text == greedy.text  # so is min_p=1
    # <|im_start|> (id 1) is special: forced by logit_bias, it is hidden unless skip_special_tokens is false
    forced = complete(logit_bias={"1": 100}, ignore_eos=True, skip_special_tokens=False)[0].text
    assert forced == "<|im_start|>" * 6 and complete(logit_bias={"1": 100}, ignore_eos=True)[0].text == ""
    # stop_token_ids ends on the forced token, but only once min_tokens other tokens were generated
    choice, n = complete(logit_bias={"1": 100}, stop_token_ids=[1], min_tokens=3)
    assert (choice.finish_reason, n) == ("stop", 4)
    stop = greedy.text[3:6]
    kept = complete(stop=[stop], include_stop_str_in_output=True)[0]
    assert kept.text == greedy.text[: greedy.text.find(stop) + len(stop)] and kept.finish_reason == "stop"


def greedy_answer(client: openai.OpenAI, prompt: list[int] | list[dict], penalty: dict[str, float]) -> str:
    """penalty_oracle.STEPS greedy tokens (EOS ignored) for a token prompt (completions) or messages (chat)."""
    native = {k: v for k, v in penalty.items() if k != "repetition_penalty"}  # the fields the openai client knows
    extra = {"ignore_eos": True, **{k: v for k, v in penalty.items() if k == "repetition_penalty"}}
    kwargs = dict(model=MODEL, max_tokens=penalty_oracle.STEPS, temperature=0, extra_body=extra, **native)
    if isinstance(prompt[0], dict):
        out = client.chat.completions.create(messages=prompt, **kwargs)
        text = out.choices[0].message.content
    else:
        out = client.completions.create(prompt=prompt, **kwargs)
        text = out.choices[0].text
    assert out.usage.completion_tokens == penalty_oracle.STEPS
    return text


def test_each_penalty_changes_greedy_output_as_transformers_says(client, tiny_llama, tokenizer_dir):
    """Each penalty alone, over HTTP, on both endpoints: the answer is transformers' greedy answer with that penalty
    applied, which differs from the unpenalised answer and from the other penalties' (so a dropped or misrouted
    penalty fails)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    chat_ids = penalty_oracle.chat_prompt_ids(tokenizer, penalty_oracle.CHAT)
    for request, prompt_ids in ((penalty_oracle.PROMPT_IDS,) * 2, (penalty_oracle.CHAT, chat_ids)):
        plain, expected = penalty_oracle.expected_texts(tiny_llama[0], tokenizer, prompt_ids)
        assert greedy_answer(client, request, {}) == plain
        for name, value in penalty_oracle.VALUES.items():
            assert greedy_answer(client, request, {name: value}) == expected[name], name


def _counts(usage) -> tuple[int, int, int]:
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


MESSAGES_HELLO = [{"role": "user", "content": "Hello there"}]
NULLS = dict(
    n=None, stop=None, seed=None, logprobs=None, top_logprobs=None, presence_penalty=None, frequency_penalty=None,
    logit_bias=None, stream_options=None, tools=None, tool_choice=None, response_format=None, user=None,
    parallel_tool_calls=None, top_p=None,
)  # fmt: skip


def test_explicit_nulls_are_unset_fields(client):
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES_HELLO, temperature=0, max_tokens=8)
    nulls = client.chat.completions.create(model=MODEL, messages=MESSAGES_HELLO, temperature=0, max_tokens=8, **NULLS)
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
