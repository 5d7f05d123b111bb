"""The engine end to end on a tiny random Llama: batch invariance, preemption, prefix caching, chunked prefill.

Greedy output must not depend on how the scheduler ran a request, on float32 and on the default settings of a
quantized model (bf16 compute, int8 K/V): those tests run on both."""

from __future__ import annotations

import random

import gguf
import pytest
import torch

from mistralpy import LLM, SamplingParams

from .helpers import llama_to_gguf

GREEDY = dict(temperature=0, ignore_eos=True)


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 49152) for _ in range(rng.randrange(3, 60))] for _ in range(n)]


def _params(n: int, seed: int = 0) -> list[SamplingParams]:
    rng = random.Random(seed)
    return [SamplingParams(max_tokens=rng.randrange(8, 25), **GREEDY) for _ in range(n)]


@pytest.fixture(scope="module")
def llm(tiny_llama):
    return LLM(str(tiny_llama[1]), dtype="float32", block_size=4, max_num_batched_tokens=64)


@pytest.fixture(scope="module")
def quantized_gguf(tiny_llama, tmp_path_factory):
    path = tmp_path_factory.mktemp("q4_1") / "tiny-q4_1.gguf"
    llama_to_gguf(tiny_llama[0], path, qtypes={"": gguf.GGMLQuantizationType.Q4_1})  # every matrix, as SmolLM2's
    return path


@pytest.fixture(scope="module", params=["float32", "default"])
def make_llm(request, tiny_llama, quantized_gguf):
    """LLM(**options) on float32, or on the quantized GGUF with the default settings (what a user gets)."""
    if request.param == "float32":
        return lambda **options: LLM(str(tiny_llama[1]), dtype="float32", **options)
    return lambda **options: LLM(str(quantized_gguf), **options)


def test_the_default_settings_are_bf16_int8_kv_and_quantized_weights(quantized_gguf, native_kernels):
    engine = LLM(str(quantized_gguf)).engine
    assert engine.dtype == torch.bfloat16 and engine.kv_cache_dtype == "int8"
    assert engine.model_runner.prefill_kernel is not None and engine.model_runner.decode_kernel is not None


def _assert_no_leak(llm: LLM) -> None:
    bm = llm.engine.block_manager
    assert not llm.engine.has_unfinished_requests()
    assert bm.num_free_blocks == bm.num_blocks and all(b.ref_count == 0 for b in bm.blocks)


def test_batch_invariance_and_preemption(make_llm):
    llm = make_llm(block_size=4, max_num_batched_tokens=64)
    prompts, params = _prompts(16), _params(16)
    alone = [llm.generate([p], [sp])[0].outputs[0].token_ids for p, sp in zip(prompts, params, strict=True)]
    batched = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    assert batched == alone
    assert llm.engine.scheduler.stats.max_batch_size >= 8
    _assert_no_leak(llm)
    # A pool of 32 blocks x 4 tokens cannot hold 16 requests of up to 84 tokens: requests get preempted.
    small = make_llm(block_size=4, num_kv_blocks=32, max_model_len=128)
    squeezed = [o.outputs[0].token_ids for o in small.generate(prompts, params)]
    assert small.engine.scheduler.stats.num_preemptions > 0
    assert squeezed == alone
    _assert_no_leak(small)


def test_prefix_cache_computes_fewer_tokens_same_output(make_llm):
    llm = make_llm(block_size=4)
    prefix = _prompts(1, seed=5)[0] * 3  # a long shared prefix
    params = SamplingParams(max_tokens=12, **GREEDY)
    stats = llm.engine.scheduler.stats
    llm.generate([prefix + [11, 12]], params)
    before = stats.num_prompt_tokens_computed
    out = llm.generate([prefix + [13, 14, 15]], params)[0]
    computed = stats.num_prompt_tokens_computed - before
    assert out.num_cached_tokens >= len(prefix) - 4
    assert computed == len(prefix) + 3 - out.num_cached_tokens
    no_cache = make_llm(block_size=4, enable_prefix_caching=False)
    assert no_cache.generate([prefix + [13, 14, 15]], params)[0].outputs[0].token_ids == out.outputs[0].token_ids
    assert no_cache.engine.block_manager.stats.hits == 0
    # a prompt cached but for its last token, which then runs as a decode step
    prompt = prefix + [13, 14, 15]
    prompt += [16] * ((1 - len(prompt)) % 4)
    llm.generate([prompt], params)
    warm = llm.generate([prompt], params)[0]
    assert warm.num_cached_tokens == len(prompt) - 1
    assert warm.outputs[0].token_ids == no_cache.generate([prompt], params)[0].outputs[0].token_ids


def test_chunked_prefill_same_output(make_llm):
    prompt = _prompts(1, seed=9)[0] * 4
    params = SamplingParams(max_tokens=10, **GREEDY)
    chunked = make_llm(max_num_batched_tokens=16, enable_prefix_caching=False)
    whole = make_llm(block_size=4, max_num_batched_tokens=512)
    assert (
        chunked.generate([prompt], params)[0].outputs[0].token_ids
        == whole.generate([prompt], params)[0].outputs[0].token_ids
    )


def test_abort_frees_blocks(llm):
    engine = llm.engine
    rid = engine.add_request(_prompts(1)[0], SamplingParams(max_tokens=50, **GREEDY))
    engine.step()
    assert engine.block_manager.num_free_blocks < engine.block_manager.num_blocks
    engine.abort_request(rid)
    _assert_no_leak(llm)


def test_seed_reproducible_whatever_the_batch(llm):
    prompt = [5, 6, 7, 8]
    seeded = SamplingParams(temperature=1.0, seed=1234, max_tokens=16, ignore_eos=True)
    alone = llm.generate([prompt], seeded)[0].outputs[0].token_ids
    others = [SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True)] * 3
    batch = llm.generate([[9, 9], prompt, [1, 2, 3], [4]], [others[0], seeded, others[1], others[2]])
    assert batch[1].outputs[0].token_ids == alone
    other_seed = llm.generate([prompt], SamplingParams(temperature=1.0, seed=99, max_tokens=16, ignore_eos=True))
    assert other_seed[0].outputs[0].token_ids != alone


def test_n_samples(llm):
    out = llm.generate([[5, 6, 7]], SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8, ignore_eos=True))[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    again = llm.generate([[5, 6, 7]], SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8, ignore_eos=True))[0]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in out.outputs]
    _assert_no_leak(llm)


def test_stop_string_spanning_tokens(llm):
    prompt = [100, 200, 300]
    full = llm.generate([prompt], SamplingParams(max_tokens=20, **GREEDY))[0].outputs[0]
    tok = llm.get_tokenizer()
    first5 = tok.decode(full.token_ids[:5])
    stop = tok.decode(full.token_ids[:7])[len(first5) - 2 :]  # ends of token 4 through token 7
    out = llm.generate([prompt], SamplingParams(max_tokens=20, stop=[stop], **GREEDY))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == full.text[: full.text.index(stop)]
    assert stop not in out.text
    kept = llm.generate([prompt], SamplingParams(max_tokens=20, stop=stop, include_stop_str_in_output=True, **GREEDY))
    assert kept[0].outputs[0].text == full.text[: full.text.index(stop) + len(stop)]


def test_partial_stop_string_at_the_end_is_released(llm):
    prompt = [100, 200, 300]
    full = llm.generate([prompt], SamplingParams(max_tokens=12, **GREEDY))[0].outputs[0]
    never = full.text[-2:] + "\x00never"  # the text ends with the start of this stop string
    out = llm.generate([prompt], SamplingParams(max_tokens=12, stop=[never], **GREEDY))[0].outputs[0]
    assert out.text == full.text and out.finish_reason == "length"


def test_stop_token_ids_and_max_tokens(llm):
    full = llm.generate([[1, 2, 3]], SamplingParams(max_tokens=10, **GREEDY))[0].outputs[0]
    assert full.finish_reason == "length" and len(full.token_ids) == 10
    stop_id = full.token_ids[3]
    out = llm.generate([[1, 2, 3]], SamplingParams(max_tokens=10, stop_token_ids=[stop_id], **GREEDY))[0].outputs[0]
    assert out.token_ids == full.token_ids[: full.token_ids.index(stop_id) + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_id


def test_logprobs_and_prompt_logprobs(llm):
    prompt = [10, 20, 30, 40, 50, 60]
    out = llm.generate([prompt], SamplingParams(max_tokens=5, logprobs=3, prompt_logprobs=2, **GREEDY))[0]
    comp = out.outputs[0]
    assert len(comp.logprobs) == 5
    for token, entry in zip(comp.token_ids, comp.logprobs, strict=True):
        assert token in entry and entry[token].rank == 1  # greedy picks the best token
        assert len(entry) == 3 and all(lp.logprob <= 0 for lp in entry.values())
        assert entry[token].decoded_token is not None
    assert len(out.prompt_logprobs) == len(prompt) and out.prompt_logprobs[0] is None
    for token, entry in zip(prompt[1:], out.prompt_logprobs[1:], strict=True):
        assert token in entry and 2 <= len(entry) <= 3
    assert comp.cumulative_logprob == pytest.approx(
        sum(e[t].logprob for t, e in zip(comp.token_ids, comp.logprobs, strict=True))
    )


def test_generation_config_defaults(tiny_llama, tmp_path):
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_llama[1], folder)
    config = json.loads((folder / "generation_config.json").read_text())
    config.update(temperature=0.0, top_p=0.5, top_k=7, repetition_penalty=1.1, max_new_tokens=5)
    (folder / "generation_config.json").write_text(json.dumps(config))
    llm = LLM(str(folder), dtype="float32")
    params = llm.get_default_sampling_params()
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty, params.max_tokens) == (
        0.0, 0.5, 7, 1.1, 5,
    )  # fmt: skip
    out = llm.generate([[5, 6, 7]])[0].outputs[0]  # no SamplingParams: the model's defaults
    assert len(out.token_ids) <= 5
    assert out.token_ids == llm.generate([[5, 6, 7]], params)[0].outputs[0].token_ids


def test_prompt_logprobs_zero_gives_only_the_prompt_tokens(llm):
    prompt = [10, 20, 30, 40]
    out = llm.generate([prompt], SamplingParams(max_tokens=2, prompt_logprobs=0, **GREEDY))[0]
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == 4
    assert [list(entry) for entry in out.prompt_logprobs[1:]] == [[20], [30], [40]]
