"""Runner, mistral.rs's in-process API: the server's request/response objects, synchronous, from any context."""

from __future__ import annotations

import asyncio
import threading

import pydantic
import pytest
import torch

from mistralpy import (
    LLM,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelDType,
    Runner,
    SamplingParams,
    Which,
)
from mistralpy.engine.async_engine import EngineDeadError
from mistralpy.errors import InvalidRequestError, ModelNotFoundError, PromptTooLongError, UnknownModelError

from . import penalty_oracle

CHAT = [{"role": "user", "content": "Tell me a story."}]


def gguf_which(tiny_llama, **kwargs) -> Which.GGUF:
    gguf = tiny_llama[2]
    return Which.GGUF(quantized_model_id=str(gguf.parent), quantized_filename=gguf.name, dtype="f32", **kwargs)


@pytest.fixture(scope="module")
def runner(tiny_llama):
    with Runner(which=gguf_which(tiny_llama)) as r:
        yield r


def chat(stream: bool = False, **kwargs) -> ChatCompletionRequest:
    fields = {"model": "default", "messages": CHAT, "max_tokens": 12, "temperature": 0, "stream": stream}
    return ChatCompletionRequest(**(fields | kwargs))


def test_chat_matches_llm_and_counts_usage(runner, tiny_llama):
    res = runner.send_chat_completion_request(chat(top_p=0.1))  # top_p has no effect at temperature 0
    assert isinstance(res, ChatCompletionResponse) and res.model == "default"
    expected = LLM(str(tiny_llama[2]), dtype="float32").chat(CHAT, SamplingParams(temperature=0, max_tokens=12))[0]
    assert res.choices[0].message.content == expected.outputs[0].text
    num_prompt = len(runner.engine.tokenizer.apply_chat_template(CHAT, tokenize=True))
    assert (res.usage.prompt_tokens, res.usage.completion_tokens, res.usage.total_tokens) == (
        num_prompt,
        12,
        num_prompt + 12,
    )
    assert res.choices[0].finish_reason == "length"


def greedy_answer(runner: Runner, prompt: list[int] | list[dict], penalty: dict[str, float]) -> str:
    """penalty_oracle.STEPS greedy tokens (EOS ignored) for a token prompt (completion) or messages (chat)."""
    fields = {"max_tokens": penalty_oracle.STEPS, "temperature": 0, "ignore_eos": True, **penalty}
    if isinstance(prompt[0], dict):
        res = runner.send_chat_completion_request(ChatCompletionRequest(messages=prompt, **fields))
        return res.choices[0].message.content
    return runner.send_completion_request(CompletionRequest(prompt=prompt, **fields)).choices[0].text


def test_each_penalty_changes_greedy_output_as_transformers_says(runner, tiny_llama, tokenizer_dir):
    """Each penalty alone, chat and completion: transformers' greedy answer with that penalty applied, which differs
    from the unpenalised answer and from the other penalties' (so a dropped or misrouted penalty fails)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    chat_ids = penalty_oracle.chat_prompt_ids(tokenizer, penalty_oracle.CHAT)
    for request, prompt_ids in ((penalty_oracle.PROMPT_IDS,) * 2, (penalty_oracle.CHAT, chat_ids)):
        plain, expected = penalty_oracle.expected_texts(tiny_llama[0], tokenizer, prompt_ids)
        assert greedy_answer(runner, request, {}) == plain
        for name, value in penalty_oracle.VALUES.items():
            assert greedy_answer(runner, request, {name: value}) == expected[name], name


def test_chat_stream_adds_up_to_the_non_stream_answer(runner):
    full = runner.send_chat_completion_request(chat())
    options = {"include_usage": True}
    chunks = list(runner.send_chat_completion_request(chat(stream=True, stream_options=options)))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta == {"role": "assistant", "content": ""}
    text = "".join(c.choices[0].delta.get("content", "") for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and _counts(chunks[-1].usage) == _counts(full.usage)  # cached_tokens may grow
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_n_choices_and_stream(runner):
    body = {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "n": 2}
    res = runner.send_completion_request(CompletionRequest(**body))
    assert isinstance(res, CompletionResponse) and [c.index for c in res.choices] == [0, 1]
    assert res.choices[0].text == res.choices[1].text  # greedy
    assert (res.usage.prompt_tokens, res.usage.completion_tokens) == (len(runner.tokenize_text(body["prompt"])), 10)
    chunks = list(runner.send_completion_request(CompletionRequest(**body, stream=True)))
    assert all(isinstance(c, CompletionResponse) for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == 1) == res.choices[1].text


def test_tokenize_detokenize_round_trip(runner):
    ids = runner.tokenize_text("Hello world, how are you?")
    assert ids and all(isinstance(t, int) for t in ids)
    assert runner.detokenize_text(ids) == "Hello world, how are you?"
    assert runner.tokenize_text("hi", add_special_tokens=False) == runner.engine.tokenizer.encode("hi", False)
    assert runner.max_sequence_length() == 512
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        runner.detokenize_text([10**9])


def test_int_logit_bias_keys_work_in_python(runner):
    token = runner.tokenize_text(" cat", add_special_tokens=False)[0]
    res = runner.send_chat_completion_request(chat(max_tokens=3, logit_bias={token: 100.0}))
    assert res.choices[0].message.content == runner.detokenize_text([token] * 3)


def test_stream_broken_early_frees_every_kv_block(runner):
    total = runner.call(lambda e: e.block_manager.num_blocks)
    for _ in runner.send_chat_completion_request(chat(stream=True, max_tokens=400, ignore_eos=True)):
        break
    assert runner.call(lambda e: (e.block_manager.num_free_blocks, e.has_unfinished_requests())) == (total, False)
    stream = runner.send_completion_request(CompletionRequest(prompt="Hi", max_tokens=400, stream=True))
    next(stream)
    stream.close()  # an iterator kept in a variable: close() (or a with block) aborts it
    assert runner.call(lambda e: (e.block_manager.num_free_blocks, e.has_unfinished_requests())) == (total, False)


def test_invalid_requests_raise_mistralpy_errors(runner):
    with pytest.raises(InvalidRequestError, match="n: Input should be greater"):
        chat(n=0)
    with pytest.raises(InvalidRequestError, match="'n_choices' \\(use 'n'\\)"):
        chat(n_choices=2)
    with pytest.raises(InvalidRequestError, match="unknown or unsupported field 'functions'"):
        chat(functions=[])  # OpenAI's legacy function calling: `tools` replaced it
    with pytest.raises(pydantic.ValidationError):  # the server's path (model_validate_json) keeps pydantic's errors
        ChatCompletionRequest.model_validate({"messages": CHAT, "n": 0})
    with pytest.raises(InvalidRequestError, match="temperature"):
        runner.send_chat_completion_request(chat(temperature=-1))
    with pytest.raises(PromptTooLongError, match="max_tokens"):
        runner.send_chat_completion_request(chat(max_tokens=10_000))
    with pytest.raises(UnknownModelError, match="this runner serves 'default'"):
        runner.send_chat_completion_request(chat(model="gpt-4"))
    with pytest.raises(UnknownModelError):
        runner.send_completion_request(CompletionRequest(prompt="x"), model_id="gpt-4")
    with pytest.raises(InvalidRequestError, match="expected a ChatCompletionRequest"):
        runner.send_chat_completion_request({"messages": CHAT})
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        runner.send_completion_request(CompletionRequest(prompt=[[1, 2], [10**9]]))
    assert runner.call(lambda e: e.has_unfinished_requests()) is False


def test_unknown_and_unsupported_options_raise(tiny_llama):
    gguf, folder = tiny_llama[2], tiny_llama[1]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Which.GGUF(str(gguf), gguf.name, colour="red")
    with pytest.raises(InvalidRequestError, match="topology"):
        Which.GGUF(str(gguf), gguf.name, topology="topo.yml")
    Which.GGUF(str(gguf), gguf.name, topology=None, max_adapters=16)  # mistral.rs's "off" values ask for nothing
    with pytest.raises(InvalidRequestError, match="from_uqff"):
        Which.Plain(str(folder), from_uqff="x.uqff")
    with pytest.raises(TypeError, match="quantized_filename"):
        Which.Plain(str(folder), quantized_filename="x")
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_sequences'"):
        Runner(gguf_which(tiny_llama), max_sequences=4)
    with pytest.raises(InvalidRequestError, match="no_kv_cache"):
        Runner(gguf_which(tiny_llama), no_kv_cache=True)
    with pytest.raises(InvalidRequestError, match="max_num_seqs"):
        Runner(gguf_which(tiny_llama), max_seqs=0)
    with pytest.raises(InvalidRequestError, match="unknown quantization 'q5_k'"):
        Runner(gguf_which(tiny_llama), in_situ_quant="Q5K")
    with pytest.raises(InvalidRequestError, match="kv_cache_dtype 'f8e4m3'"):
        Runner(gguf_which(tiny_llama), pa_cache_type="f8e4m3")
    with pytest.raises(InvalidRequestError, match="arch 'mistral' does not match"):
        Which.Plain(str(folder), arch="mistral").resolve()
    with pytest.raises(InvalidRequestError, match="Hugging Face model folder"):
        Which.Plain(str(gguf)).resolve()


def test_which_gguf_paths(tiny_llama):
    gguf = tiny_llama[2]
    assert Which.GGUF(str(gguf), gguf.name).resolve().model == str(gguf)  # the file itself
    assert Which.GGUF(str(gguf.parent), [gguf.name], dtype=ModelDType.BF16).resolve().dtype == "bfloat16"
    with pytest.raises(InvalidRequestError, match="names 'other.gguf'"):
        Which.GGUF(str(gguf), "other.gguf").resolve()
    with pytest.raises(ModelNotFoundError, match="'other.gguf' not found"):
        Which.GGUF(str(gguf.parent), "other.gguf").resolve()
    with pytest.raises(ModelNotFoundError, match="local paths only"):
        Which.GGUF("TheBloke/Mistral-7B-Instruct-v0.1-GGUF", "mistral.gguf").resolve()


def test_plain_and_gguf_with_tok_model_id(tiny_llama):
    folder = tiny_llama[1]
    expected = LLM(str(folder), dtype="float32").chat(CHAT, SamplingParams(temperature=0, max_tokens=8))[0]
    with Runner(Which.Plain(model_id=str(folder), arch="llama", dtype=ModelDType.F32), prefix_cache_n=0) as r:
        res = r.send_chat_completion_request(chat(max_tokens=8))
        assert res.choices[0].message.content == expected.outputs[0].text
        assert r.call(lambda e: e.block_manager.enable_prefix_caching) is False
    with Runner(gguf_which(tiny_llama, tok_model_id=str(folder))) as r:
        assert r.engine.tokenizer is r.call(lambda e: e.output_processor.tokenizer)
        assert r.detokenize_text(r.tokenize_text("Hello there")) == "Hello there"
        assert r.send_chat_completion_request(chat(max_tokens=4)).usage.completion_tokens == 4


def test_seed_makes_a_run_reproducible(tiny_llama):
    def run() -> list[str]:
        with Runner(gguf_which(tiny_llama), seed=7) as r:
            return [r.send_chat_completion_request(chat(temperature=1.0)).choices[0].message.content for _ in range(2)]

    first, second = run(), run()
    assert first == second and first[0] != first[1]


def test_works_inside_a_running_event_loop(runner):
    async def main() -> tuple[str, str, list[int]]:
        asyncio.get_running_loop()  # as in Jupyter: a loop is running in this thread
        full = runner.send_chat_completion_request(chat())
        chunks = runner.send_chat_completion_request(chat(stream=True))
        text = "".join(c.choices[0].delta.get("content", "") for c in chunks if c.choices)
        return full.choices[0].message.content, text, runner.tokenize_text("hi")

    full, streamed, ids = asyncio.run(main())
    assert full == streamed and ids


def test_close_stops_the_threads(tiny_llama):
    before = set(threading.enumerate())
    r = Runner(gguf_which(tiny_llama))
    started = {t for t in set(threading.enumerate()) - before if t.name.startswith("mistralpy")}
    assert {t.name for t in started} == {"mistralpy-runner", "mistralpy-engine"}
    stream = r.send_chat_completion_request(chat(stream=True, max_tokens=400, ignore_eos=True))
    next(stream)
    r.close()
    assert not any(t.is_alive() for t in started)
    with pytest.raises(EngineDeadError):
        next(stream)
    with pytest.raises(EngineDeadError, match="closed"):
        r.send_chat_completion_request(chat())
    r.close()  # idempotent


def test_a_dropped_runner_stops_its_threads(tiny_llama):
    before = set(threading.enumerate())
    r = Runner(gguf_which(tiny_llama))
    r.send_completion_request(CompletionRequest(prompt="Hi", max_tokens=2))
    started = {t for t in set(threading.enumerate()) - before if t.name.startswith("mistralpy")}
    del r  # as when a notebook cell that built it runs again
    for t in started:
        t.join(timeout=10)
    assert len(started) == 2 and not any(t.is_alive() for t in started)


def test_int8_kv_cache(tiny_llama):
    with Runner(gguf_which(tiny_llama), pa_cache_type="int8") as runner:
        assert runner.engine.engine.model_runner.kv_cache.dtype == torch.uint8
        answer = runner.send_chat_completion_request(
            ChatCompletionRequest(messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
        )
        assert answer.usage.completion_tokens == 4


def _counts(usage) -> tuple[int, int, int]:
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
