"""The issue's exactness checks for the draft model, beside the n-gram ones in test_spec_decode.py: sampled tokens
keep the target's distribution (a two-sample chi-square over 20k draws, plain temperature and top-k/top-p), and the
embedded model's greedy text is unchanged in a 16-request batch whose requests get preempted."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from mistralpy import LLM, SamplingParams

from .test_spec_decode import _assert_no_leak, _texts, _token_counts, tiny16, vocab16_llama  # noqa: F401 - tiny16: a fixture


@pytest.fixture(scope="module")
def draft16(tmp_path_factory):
    """Another random tiny Llama over the same 16 tokens: its greedy drafts are sometimes the target's draws."""
    return vocab16_llama(tmp_path_factory, "draft16", seed=11)


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.8, top_k=6, top_p=0.9)])
def test_sampled_distribution_with_a_draft_model(tiny16, draft16, sampling):  # noqa: F811 - the fixture
    """20k draws of output token 2 with and without a draft model: the chi-square test must not reject equality at
    p = 0.01, with enough drafts accepted that their rows are in the counts."""
    prompt = list(range(3, 16)) * 2
    params = SamplingParams(max_tokens=3, ignore_eos=True, **sampling)
    options = dict(dtype="float32", block_size=16, max_num_seqs=1024, max_num_batched_tokens=8192)
    torch.manual_seed(0)
    plain = _token_counts(LLM(str(tiny16), **options), prompt, params, 20000, 2)
    draft = {"model": str(draft16), "num_speculative_tokens": 2, "adaptive_k": False}
    spec_llm = LLM(str(tiny16), speculative_config=draft, **options)
    spec = _token_counts(spec_llm, prompt, params, 20000, 2)
    assert spec_llm.engine.speculator.stats.num_accepted_tokens > 200
    table = [[p, s] for p, s in zip(plain, spec, strict=True) if p + s > 0]
    p_value = scipy.stats.chi2_contingency(table).pvalue
    assert p_value > 0.01, (plain, spec, p_value)


@pytest.mark.slow
def test_embedded_model_16_requests_with_preemption_both_methods():
    """The embedded model's greedy text over 16 chat prompts, alone in plain decoding, equals a speculating batch of
    all 16 in a KV pool small enough that requests are preempted, with a draft model and with n-gram lookup."""
    from mistralpy.loader.default_model import default_model_path

    subjects = ["the sea", "copper", "a lighthouse", "bread", "rain", "a violin", "maps", "bees", "glass", "snow",
                "a bridge", "tea", "clocks", "a forest", "salt", "the moon"]  # fmt: skip
    plain = LLM()
    tokenizer = plain.get_tokenizer()
    asks = [f"Write two sentences about {s}, then repeat them." for s in subjects]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": a}], tokenize=True) for a in asks]
    params = SamplingParams(temperature=0, max_tokens=40)
    expected = _texts(plain.generate(prompts, params))
    methods = [
        {"model": default_model_path(), "num_speculative_tokens": 4, "adaptive_k": False},
        {"method": "ngram", "num_speculative_tokens": 4, "adaptive_k": False},
    ]
    for config in methods:
        small = LLM(num_kv_blocks=24, max_model_len=128, max_num_seqs=16, speculative_config=config)
        assert _texts(small.generate(prompts, params)) == expected, config
        assert small.engine.scheduler.stats.num_preemptions > 0
        assert small.engine.speculator.stats.num_accepted_tokens > 0
        _assert_no_leak(small)
