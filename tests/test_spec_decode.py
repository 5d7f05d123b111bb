"""Speculative decoding (n-gram prompt lookup) inside the engine: exact against decoding without it.

The oracle of every engine test is the same engine without speculation (its own tests hold it to transformers):
greedy and seeded output must be token-identical, sampled output must have the same distribution (chi-square)."""

from __future__ import annotations

import json
import random

import pytest
import scipy.stats
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.server.metrics import PREFIX, EngineSnapshot, ServerMetrics
from mistralpy.spec_decode.config import SpeculativeConfig
from mistralpy.spec_decode.ngram_proposer import NgramProposer
from mistralpy.spec_decode.speculator import SpecDecodeStats

from .helpers import make_tiny_llama, save_tokenizer
from .test_cli import run_cli

# a fixed K: these tests are about exactness and rollback under speculation; adaptive K (which would not speculate
# in a batch of 16) has its own tests (test_spec_decode_adaptive.py)
NGRAM = {
    "method": "ngram",
    "num_speculative_tokens": 3,
    "prompt_lookup_min": 1,
    "prompt_lookup_max": 3,
    "adaptive_k": False,
}
GREEDY = dict(temperature=0, ignore_eos=True)


def _repetitive_prompts(n: int, seed: int = 0) -> list[list[int]]:
    """Prompts that repeat a random span: lookups find matches, so drafts get proposed and some accepted."""
    rng = random.Random(seed)
    return [[rng.randrange(3, 49152) for _ in range(rng.randrange(3, 12))] * 3 for _ in range(n)]


def _texts(outputs) -> list[list[list[int]]]:
    return [[c.token_ids for c in o.outputs] for o in outputs]


def _assert_no_leak(llm: LLM) -> None:
    bm = llm.engine.block_manager
    assert not llm.engine.has_unfinished_requests()
    assert bm.num_free_blocks == bm.num_blocks and all(b.ref_count == 0 for b in bm.blocks)


def vocab16_llama(tmp_path_factory, name: str, seed: int):
    """A tiny random Llama with a vocabulary of 16 tokens (the embedded model's tokenizer decodes its ids)."""
    folder = tmp_path_factory.mktemp(name)
    save_tokenizer(folder)
    make_tiny_llama(folder, seed=seed, vocab_size=16)
    return folder


@pytest.fixture(scope="module")
def tiny16(tmp_path_factory):
    return vocab16_llama(tmp_path_factory, "tiny16", seed=3)


def test_ngram_proposer_takes_the_longest_latest_match():
    proposer = NgramProposer(min_n=1, max_n=3)
    # suffix [1, 2] recurs at 0 and 4; the latest (4) is taken; [9, 1, 2] never recurs, so n = 2 is used
    assert proposer.propose([1, 2, 3, 4, 1, 2, 5, 6, 9, 1, 2], 3) == [5, 6, 9]
    assert proposer.propose([1, 2, 3, 4, 1, 2, 5, 6, 9, 1, 2], 1) == [5]
    # the 3-gram [7, 8, 9] recurs and wins over the later 1-gram match of [9]
    assert proposer.propose([7, 8, 9, 10, 11, 9, 12, 7, 8, 9], 2) == [10, 11]
    assert proposer.propose([1, 2, 3, 4], 3) == []  # nothing recurs
    assert proposer.propose([5, 5], 4) == [5]  # proposals end where the tokens do
    assert NgramProposer(min_n=2, max_n=3).propose([1, 2, 3, 9, 3], 2) == []  # a 1-gram match is too short
    assert proposer.propose([1, 2, 1], 0) == []


@pytest.mark.parametrize(
    "value, message",
    [
        ({"method": "eagle"}, "unknown speculative method"),
        ({"num_speculative_tokens": 0}, "num_speculative_tokens"),
        ({"prompt_lookup_min": 3, "prompt_lookup_max": 2}, "exceeds prompt_lookup_max"),
        ({"k": 3}, "unknown speculative_config keys"),
        ("ngram", "must be a dict"),
    ],
)
def test_speculative_config_errors(value, message):
    with pytest.raises(InvalidRequestError, match=message):
        SpeculativeConfig.of(value)


def test_greedy_identity_alone_batched_and_under_preemption(tiny_llama):
    prompts = _repetitive_prompts(16)
    params = [SamplingParams(max_tokens=random.Random(i).randrange(6, 17), **GREEDY) for i in range(16)]
    plain = LLM(str(tiny_llama[1]), dtype="float32", block_size=4)
    expected = _texts(plain.generate(prompts, params))
    spec = LLM(str(tiny_llama[1]), dtype="float32", block_size=4, speculative_config=NGRAM)
    alone = [_texts(spec.generate([p], [sp]))[0] for p, sp in zip(prompts[:2], params[:2], strict=True)]
    assert alone == expected[:2]
    assert _texts(spec.generate(prompts, params)) == expected
    stats = spec.engine.speculator.stats
    assert stats.num_accepted_tokens > 0 and stats.num_draft_tokens > stats.num_accepted_tokens
    _assert_no_leak(spec)
    # 32 blocks of 4 tokens cannot hold 16 requests of up to 49 tokens: requests get preempted mid-speculation
    small = LLM(str(tiny_llama[1]), dtype="float32", block_size=4, num_kv_blocks=32, max_model_len=128,
                speculative_config=NGRAM)  # fmt: skip
    assert _texts(small.generate(prompts, params)) == expected
    assert small.engine.scheduler.stats.num_preemptions > 0 and small.engine.speculator.stats.num_accepted_tokens > 0
    _assert_no_leak(small)


def test_stop_conditions_on_accepted_tokens(tiny_llama):
    """Stop tokens, stop strings and max_tokens end a verify step's tokens where plain decoding would end."""
    plain = LLM(str(tiny_llama[1]), dtype="float32", block_size=4)
    spec = LLM(str(tiny_llama[1]), dtype="float32", block_size=4, speculative_config=NGRAM)
    prompts = _repetitive_prompts(4, seed=1)
    full = plain.generate(prompts, SamplingParams(max_tokens=24, **GREEDY))
    cases = []
    for out in full:
        tokens, text = out.outputs[0].token_ids, out.outputs[0].text
        cases.append(SamplingParams(max_tokens=24, stop_token_ids=[tokens[9]], **GREEDY))
        cases.append(SamplingParams(max_tokens=24, stop=[text[len(text) // 2 : len(text) // 2 + 3]], **GREEDY))
        cases.append(SamplingParams(max_tokens=7, logprobs=2, **GREEDY))
    many = [p for p in prompts for _ in range(3)]
    want, got = plain.generate(many, cases), spec.generate(many, cases)
    for w, g in zip(want, got, strict=True):
        wo, go = w.outputs[0], g.outputs[0]
        assert (go.token_ids, go.text, go.finish_reason, go.stop_reason) == (
            wo.token_ids, wo.text, wo.finish_reason, wo.stop_reason,
        )  # fmt: skip
        if wo.logprobs is not None:
            for a, b in zip(wo.logprobs, go.logprobs, strict=True):
                assert a.keys() == b.keys()
                assert all(abs(a[t].logprob - b[t].logprob) < 1e-4 for t in a)
    assert spec.engine.speculator.stats.num_accepted_tokens > 0
    _assert_no_leak(spec)


def test_seeded_sampling_same_text_alone_in_a_batch_and_without_speculation(tiny16):
    """Every sampler setting at once; n > 1; an abort in the middle leaves no block behind."""
    prompt = list(range(3, 16)) * 2
    seeded = SamplingParams(
        temperature=0.9, top_k=10, top_p=0.95, min_p=0.02, presence_penalty=0.3, frequency_penalty=0.2,
        repetition_penalty=1.1, logit_bias={5: 1.5}, seed=1234, max_tokens=24, ignore_eos=True, n=2,
    )  # fmt: skip
    plain = LLM(str(tiny16), dtype="float32", block_size=4)
    expected = _texts(plain.generate([prompt], seeded))[0]
    spec = LLM(str(tiny16), dtype="float32", block_size=4, speculative_config=NGRAM)
    assert _texts(spec.generate([prompt], seeded))[0] == expected
    others = SamplingParams(temperature=1.0, max_tokens=20, ignore_eos=True)
    engine = spec.engine
    doomed = engine.add_request(prompt[5:], others)
    engine.step()
    engine.step()
    engine.abort_request(doomed)
    batch = spec.generate([[4, 5, 4, 5], prompt, prompt[3:]], [others, seeded, others])
    assert _texts(batch)[1] == expected
    assert engine.speculator.stats.num_accepted_tokens > 0
    assert EngineSnapshot.of(engine, {}).spec_decode == engine.speculator.stats  # what /metrics shows
    _assert_no_leak(spec)


def _token_counts(llm: LLM, prompt: list[int], params: SamplingParams, num: int, position: int) -> list[int]:
    outputs = llm.generate([prompt] * num, params)
    counts = [0] * 16
    for out in outputs:
        counts[out.outputs[0].token_ids[position]] += 1
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.8, top_k=6, top_p=0.9)])
def test_sampled_distribution_is_the_target_models(tiny16, sampling):
    """20k draws of output token 2 (a verify step's second row when draft 0 was accepted, else a plain or first
    row) with and without speculation: a two-sample chi-square test must not reject equality at p = 0.01."""
    prompt = list(range(3, 16)) * 2  # every token recurs: a 1-gram lookup always proposes
    params = SamplingParams(max_tokens=3, ignore_eos=True, **sampling)
    options = dict(dtype="float32", block_size=16, max_num_seqs=1024, max_num_batched_tokens=8192)
    torch.manual_seed(0)
    plain = _token_counts(LLM(str(tiny16), **options), prompt, params, 20000, 2)
    spec_llm = LLM(str(tiny16), speculative_config=NGRAM, **options)
    spec = _token_counts(spec_llm, prompt, params, 20000, 2)
    # K is 1 at output token 1 (max_tokens caps it): draws of row 1 enter the counts where that draft was accepted
    assert spec_llm.engine.speculator.stats.num_accepted_tokens > 200
    table = [[p, s] for p, s in zip(plain, spec, strict=True) if p + s > 0]
    p_value = scipy.stats.chi2_contingency(table).pvalue
    assert p_value > 0.01, (plain, spec, p_value)


def test_metrics_lines():
    stats = SpecDecodeStats(num_drafts=4, num_draft_tokens=10, num_accepted_tokens=5, num_emitted_tokens=9)
    lines = ServerMetrics().render(EngineSnapshot(spec_decode=stats)).decode().splitlines()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if not line.startswith("#")}
    name = f"{PREFIX}spec_decode_"
    assert values[f"{name}num_draft_tokens_total"] == 10 and values[f"{name}num_accepted_tokens_total"] == 5
    assert values[f"{name}num_emitted_tokens_total"] == 9 and values[f"{name}num_drafts_total"] == 4
    assert values[f"{name}acceptance_rate"] == 0.5 and values[f"{name}mean_accepted_length"] == 2.25
    plain = ServerMetrics().render(EngineSnapshot()).decode()
    assert "spec_decode" not in plain


def test_bench_reports_speculation_and_flags_are_checked(tiny_llama):
    args = ["bench", "-m", str(tiny_llama[2]), "-p", "8", "-n", "6", "--concurrency", "1", "-r", "1"]
    out = run_cli(*args, "--speculative-method", "ngram", "--num-speculative-tokens", "2", "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)["meta"]["spec_decode"]
    assert set(spec) == {"draft_tokens", "accepted_tokens", "emitted_tokens", "acceptance_rate", "mean_accepted_length"}
    assert spec["emitted_tokens"] >= spec["accepted_tokens"] and spec["draft_tokens"] >= spec["accepted_tokens"]
    bad = run_cli(*args, "--num-speculative-tokens", "2")
    assert bad.returncode == 1 and "--num-speculative-tokens needs --speculative-method" in bad.stderr
    bad = run_cli(*args, "--speculative-method", "ngram", "--speculative-quantization", "q8_0")
    assert bad.returncode == 1 and "takes no 'model' or 'quantization'" in bad.stderr


@pytest.mark.slow
def test_embedded_model_greedy_identity_alone_and_under_preemption():
    """The embedded model's default settings (quantized weights, bf16, int8 K/V) on prompts the answer copies from."""
    texts = [
        "The keeper's cottage has two rooms, a kitchen with an iron stove and a cellar cut into the rock.",
        "Sheep graze on the slopes between the tower and the harbour; guillemots crowd the western cliffs.",
        "Visitors climb the one hundred and twelve steps of the staircase to the gallery above the light.",
    ]
    plain = LLM()
    tokenizer = plain.get_tokenizer()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Repeat the following text exactly, twice.\n\n{t}"}], tokenize=True
        )
        for t in texts
    ]
    params = SamplingParams(temperature=0, max_tokens=40)
    expected = _texts(plain.generate(prompts, params))
    spec = LLM(speculative_config=NGRAM)
    assert [_texts(spec.generate([p], params))[0] for p in prompts] == expected
    assert spec.engine.speculator.stats.mean_accepted_length > 1.5
    small = LLM(num_kv_blocks=8, max_model_len=128, speculative_config=NGRAM)
    assert _texts(small.generate(prompts, params)) == expected
    assert small.engine.scheduler.stats.num_preemptions > 0
    _assert_no_leak(small)
