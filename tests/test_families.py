"""Every model family against transformers (fp32), from its HF folder and from GGUF files, through the engine:
logits for a chunked prefill and decode steps, greedy tokens, a Q8_0 file, batch invariance and prefix caching."""

from __future__ import annotations

import random

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model

from .families import FAMILIES
from .model_steps import BLOCK, decode, prefill, reference_greedy, reference_logits

GREEDY = dict(temperature=0, ignore_eos=True)


@pytest.fixture(params=FAMILIES)
def family(request, family_files):
    return family_files(request.param)


def _source(files, fmt: str):
    return {"hf": files.folder, "gguf": files.gguf, "q8_0": files.gguf_q8}[fmt]


def engine_logits(source, prompt: list[int], steps: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prefill logits in two chunks, one logits row per decode step) from our model in fp32."""
    model = load_model(open_model_source(source), torch.float32)
    runner = ModelRunner(model, num_blocks=64, block_size=BLOCK, dtype=torch.float32)
    with torch.inference_mode():
        split = len(prompt) // 2 + 1
        pre = torch.cat([prefill(runner, prompt[:split], 0), prefill(runner, prompt[split:], split)])
        dec = torch.stack([decode(runner, t, len(prompt) + i) for i, t in enumerate(steps)])
    return pre, dec


PROMPT = torch.randint(3, 49152, (26,), generator=torch.Generator().manual_seed(1)).tolist()
STEPS = [7, 8, 9, 10]


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_logits_match_transformers(family, fmt):
    ref = reference_logits(family.reference, PROMPT + STEPS)
    pre, dec = engine_logits(_source(family, fmt), PROMPT, STEPS)
    torch.testing.assert_close(pre, ref[: len(PROMPT)], atol=1e-4, rtol=0)
    torch.testing.assert_close(dec, ref[len(PROMPT) :], atol=1e-4, rtol=0)


def test_q8_0_close_to_transformers(family):
    """Q8_0 weights (kept quantized when computing in bf16, dequantized in fp32 here): every logit within 2% of the
    reference's logit range, and the same argmax at 90% of positions or more (or the family's own bounds)."""
    ref = reference_logits(family.reference, PROMPT + STEPS)
    pre, dec = engine_logits(family.gguf_q8, PROMPT, STEPS)
    ours = torch.cat([pre, dec])
    spread = (ref.max() - ref.min()).item()
    assert (ours - ref).abs().max().item() <= family.spec.q8_0_tolerance * spread
    # double: 27 / 30 is 0.9 exactly
    assert (ours.argmax(-1) == ref.argmax(-1)).double().mean().item() >= family.spec.q8_0_argmax


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_greedy_tokens_match_transformers(family, fmt):
    llm = LLM(str(_source(family, fmt)), dtype="float32", block_size=BLOCK)
    prompts = [[5, 100, 2000, 31, 7, 9], PROMPT]
    outs = llm.generate(prompts, SamplingParams(max_tokens=24, **GREEDY))
    for prompt, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == reference_greedy(family.reference, prompt, 24)


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 49152) for _ in range(rng.randrange(3, 40))] for _ in range(n)]


def test_batch_invariance_with_preemption(family):
    prompts = _prompts(8)
    params = [SamplingParams(max_tokens=8 + i, **GREEDY) for i in range(8)]
    llm = LLM(str(family.folder), dtype="float32", block_size=BLOCK, max_num_batched_tokens=32)
    alone = [llm.generate([p], [sp])[0].outputs[0].token_ids for p, sp in zip(prompts, params, strict=True)]
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, params)] == alone
    small = LLM(str(family.folder), dtype="float32", block_size=BLOCK, num_kv_blocks=24, max_model_len=64)
    assert [o.outputs[0].token_ids for o in small.generate(prompts, params)] == alone
    assert small.engine.scheduler.stats.num_preemptions > 0


def test_prefix_cache_same_output(family):
    llm = LLM(str(family.gguf), dtype="float32", block_size=BLOCK)
    prefix = _prompts(1, seed=5)[0] + _prompts(1, seed=6)[0]
    params = SamplingParams(max_tokens=10, **GREEDY)
    llm.generate([prefix + [11, 12]], params)
    out = llm.generate([prefix + [13, 14, 15]], params)[0]
    assert out.num_cached_tokens >= len(prefix) - BLOCK
    fresh = LLM(str(family.gguf), dtype="float32", block_size=BLOCK, enable_prefix_caching=False)
    assert out.outputs[0].token_ids == fresh.generate([prefix + [13, 14, 15]], params)[0].outputs[0].token_ids
