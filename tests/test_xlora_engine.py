"""X-LoRA in the engine: `LLM(model, xlora=PATH)` runs X-LoRA and plain requests in one batch (each equal to PEFT's
XLoraModel or the base alone), the prefix cache keeps both passes' K/V of X-LoRA prompts apart from plain ones, the
scalings log equals PEFT's scalings; `serve --xlora PATH` selects the X-LoRA model by the request's `model`."""

from __future__ import annotations

import json
import signal

import openai
import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.lora.xlora.manager import XLoraManager

from .server_process import KEY, MODEL, ServerProcess, http
from .test_lora import PROMPT, _check_against
from .xlora_models import make_xlora, xlora_logits


@pytest.fixture(scope="module")
def xlora(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("xlora") / "xl"
    return folder, make_xlora(tiny_llama[0], folder, seed=11, num_adapters=3, top_k_lora=2, layerwise_scalings=True)


def test_mixed_batch_and_scalings_log(tiny_llama, xlora, tmp_path, monkeypatch):
    folder, reference = xlora
    log = tmp_path / "scalings.jsonl"
    steps: list[list[int]] = []
    begin = XLoraManager.begin_step
    monkeypatch.setattr(XLoraManager, "begin_step", lambda self, slots: (steps.append(list(slots)), begin(self, slots)))
    llm = LLM(str(tiny_llama[1]), dtype="float32", xlora=str(folder), xlora_log=str(log), block_size=4)
    x = llm.xlora_request
    prompts = [PROMPT, PROMPT[2:], PROMPT[4:]]
    params = SamplingParams(temperature=0, max_tokens=4, logprobs=3, ignore_eos=True)
    outputs = llm.generate(prompts, params, lora_request=[x, None, x])
    assert {-1, 0} <= set(steps[0]) and len(steps[0]) == sum(map(len, prompts))  # one batch of both kinds
    for output, model in zip(outputs, (reference, tiny_llama[0], reference), strict=True):
        _check_against(model, output.prompt_token_ids, output)
    # the log: every position of the first request computed once, equal to PEFT's scalings of the whole sequence
    logged: dict[int, list] = {}
    for line in map(json.loads, log.read_text().splitlines()):
        assert line["request_id"] != outputs[1].request_id  # plain requests have no scalings
        if line["request_id"] == outputs[0].request_id:
            logged.update(zip(line["positions"], line["scalings"], strict=True))
    ids = PROMPT + list(outputs[0].outputs[0].token_ids)
    _, expected = xlora_logits(reference, ids[:-1])
    assert sorted(logged) == list(range(len(ids) - 1))
    torch.testing.assert_close(torch.tensor([logged[p] for p in sorted(logged)]), expected, atol=1e-5, rtol=0)


def test_prefix_cache_and_default(tiny_llama, xlora):
    """X-LoRA is every prompt's default; a repeated prompt reuses both passes' cached blocks (and still equals PEFT);
    a plain request of the same prompt shares none of them."""
    folder, reference = xlora
    llm = LLM(str(tiny_llama[1]), dtype="float32", xlora=str(folder), block_size=4)
    params = SamplingParams(temperature=0, max_tokens=3, logprobs=2, ignore_eos=True)
    first = llm.generate([PROMPT], params)[0]
    again = llm.generate([PROMPT], params)[0]
    plain = llm.generate([PROMPT], params, lora_request=[None])[0]
    assert (first.num_cached_tokens, again.num_cached_tokens, plain.num_cached_tokens) == (0, 12, 0)
    _check_against(reference, PROMPT, again)
    _check_against(tiny_llama[0], PROMPT, plain)


def test_bad_options(tiny_llama, xlora):
    with pytest.raises(InvalidRequestError, match="cannot be served together"):
        LLM(str(tiny_llama[1]), xlora=str(xlora[0]), enable_lora=True)
    with pytest.raises(InvalidRequestError, match="need an X-LoRA model"):
        LLM(str(tiny_llama[1]), xlora_log="/tmp/x.jsonl")


@pytest.fixture(scope="module")
def xlora_server(tiny_llama, xlora):
    args = ["-m", str(tiny_llama[1]), "--dtype", "float32", "--served-model-name", MODEL, "--api-key", KEY]
    proc = ServerProcess(*args, "--xlora", str(xlora[0]), "--xlora-name", "mix")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop(signal.SIGKILL)


def test_server_selects_xlora_by_model(xlora_server, tiny_llama, xlora):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama[1])
    client = openai.OpenAI(base_url=f"{xlora_server.url}/v1", api_key=KEY, max_retries=0)
    for name, reference in (("mix", xlora[1]), (MODEL, tiny_llama[0])):
        response = client.completions.create(
            model=name, prompt=PROMPT, max_tokens=4, temperature=0, extra_body={"ignore_eos": True}
        )
        ids = list(PROMPT)
        for _ in range(4):
            ids.append(int(xlora_logits(reference, ids)[0][-1].argmax()) if name == "mix" else _argmax(reference, ids))
        assert response.choices[0].text == tokenizer.decode(ids[len(PROMPT) :]), name
    cards = {c["id"]: c for c in http(xlora_server, "GET", "/v1/models").json()["data"]}
    assert cards["mix"]["parent"] == MODEL


def _argmax(model, ids: list[int]) -> int:
    with torch.no_grad():
        return int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())


def test_speculative_decoding(tiny_llama, xlora):
    """n-gram drafts verified on both passes' caches: greedy output and logprobs still equal PEFT's."""
    folder, reference = xlora
    spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 2}
    llm = LLM(str(tiny_llama[1]), dtype="float32", xlora=str(folder), speculative_config=spec)
    prompt = PROMPT[:6] * 3  # repeats: the n-gram proposer finds drafts
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=2, ignore_eos=True)
    _check_against(reference, prompt, llm.generate([prompt], params)[0])
