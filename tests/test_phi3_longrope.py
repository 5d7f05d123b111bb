"""Phi-3 LongRoPE against transformers on a tiny model whose original context (16) the tests run past: short factors
for a sequence within it, long factors for all of a longer prompt however it is chunked, and the switch to long
factors when a generation crosses it (as transformers' forward over a cache does), from the HF folder and GGUF."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from mistralpy import LLM, SamplingParams
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.errors import UnsupportedArchitectureError
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan
from mistralpy.layers.rotary import RotaryEmbedding
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model

from .families import build
from .families.phi3 import longrope_config

ORIGINAL = 16
BLOCK = 4
SHORT = torch.randint(3, 49152, (10,), generator=torch.Generator().manual_seed(3)).tolist()  # 10 + 4 steps <= 16
LONG = torch.randint(3, 49152, (30,), generator=torch.Generator().manual_seed(4)).tolist()
STEPS = [7, 8, 9, 10]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer_dir):
    overrides = longrope_config(original=ORIGINAL, max_positions=64)
    return build("phi3", tmp_path_factory.mktemp("phi3_longrope"), tokenizer_dir, sliding_window=None, **overrides)


def _source(files, fmt: str):
    return files.folder if fmt == "hf" else files.gguf


def _run(runner: ModelRunner, ids: list[int], start: int, prompt_len: int) -> torch.Tensor:
    """One step over ids at positions start.. of one request whose prompt is prompt_len long (as ModelRunner does)."""
    n, ctx = len(ids), start + len(ids)
    positions = torch.arange(start, ctx)
    tables = torch.arange(-(-ctx // BLOCK))
    if n == 1:
        meta = AttentionMetadata(positions, 1, tables.unsqueeze(0), torch.tensor([ctx]))
    else:
        meta = AttentionMetadata(positions, 0, prefills=[PrefillSpan(n, ctx, tables)])
    meta.prompt_lens = torch.full((n,), prompt_len)
    return runner.model.compute_logits(runner.model(torch.tensor(ids), positions, runner.kv_caches, meta))


def engine_logits(source, prompt: list[int], steps: list[int], chunk: int) -> torch.Tensor:
    """Logits of the prompt prefilled in chunks of `chunk` tokens, then one row per decode step."""
    runner = ModelRunner(load_model(open_model_source(source), torch.float32), 64, BLOCK, torch.float32)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(prompt), chunk):
            rows.append(_run(runner, prompt[start : start + chunk], start, len(prompt)))
        for i, token in enumerate(steps):
            rows.append(_run(runner, [token], len(prompt) + i, len(prompt)))
    return torch.cat(rows)


def reference_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
@pytest.mark.parametrize("prompt", [SHORT, LONG], ids=["short", "long"])
def test_whole_sequence_matches_transformers(files, fmt, prompt):
    """A sequence within the original context (short factors) and a prompt past it, whose first chunk lies inside
    the original context yet takes the long factors like the rest: both as transformers' one forward pass."""
    ref = reference_logits(files.reference, prompt + STEPS)
    ours = engine_logits(_source(files, fmt), prompt, STEPS, chunk=ORIGINAL)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_factors_differ_across_the_original_length(files):
    """The long-prompt case above is not vacuous: short factors for that prompt would give other logits."""
    ours = engine_logits(files.folder, LONG, [], chunk=len(LONG))
    short_factors = reference_logits(files.reference, LONG[:ORIGINAL])  # a sequence of 16: short factors
    assert (ours[:ORIGINAL] - short_factors).abs().max() > 1e-2


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_generation_crossing_the_original_length(files, fmt):
    """A 12-token prompt decoded 8 steps past position 16: each new token takes the factors of the length reached,
    earlier keys stay cached, as in transformers' forward passes over a cache (its generate() would also recompute
    the cache on crossing; see mistralpy/models/phi3.py)."""
    prompt, steps = SHORT[:8] + [5, 6, 7, 8], [11, 12, 13, 14, 15, 16, 17, 18]
    cache, rows = DynamicCache(config=files.reference.config), []
    with torch.no_grad():
        rows.append(files.reference(torch.tensor([prompt]), past_key_values=cache, use_cache=True).logits[0])
        for token in steps:
            rows.append(files.reference(torch.tensor([[token]]), past_key_values=cache, use_cache=True).logits[0])
    ref = torch.cat(rows)
    ours = engine_logits(_source(files, fmt), prompt, steps, chunk=5)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    ids, out = list(ids), []
    for _ in range(n):
        out.append(int(reference_logits(model, ids)[-1].argmax()))
        ids.append(out[-1])
    return out


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_engine_greedy_in_one_batch(files, fmt):
    """Through the engine, both prompts in one batch with 6-token prefill chunks: each request keeps its own factors
    (short: 10 + 6 tokens stay within 16; long: past it from the start), as transformers' whole-sequence passes."""
    llm = LLM(str(_source(files, fmt)), dtype="float32", block_size=BLOCK, max_num_batched_tokens=6)
    outs = llm.generate([SHORT, LONG], SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    for prompt, out in zip([SHORT, LONG], outs, strict=True):
        assert out.outputs[0].token_ids == reference_greedy(files.reference, prompt, 6)


def test_longrope_without_its_factors_is_an_error():
    rotary = RotaryEmbedding(16, 64, 10000.0, {"rope_type": "longrope", "original_max_position_embeddings": 16})
    with pytest.raises(UnsupportedArchitectureError, match="short_factor"):
        rotary.build_cache()
    with pytest.raises(UnsupportedArchitectureError, match="original_max_position_embeddings"):
        RotaryEmbedding(16, 64, 10000.0, {"rope_type": "longrope", "short_factor": [1.0] * 8})


def test_prefix_cache_keeps_short_and_long_rotations_apart(files):
    """A prompt past the original context must not reuse KV blocks a shorter prompt computed with short factors."""
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    llm = LLM(str(files.folder), dtype="float32", block_size=BLOCK)
    llm.generate([LONG[:12]], params)  # 12 tokens: short factors; caches 3 full blocks
    out = llm.generate([LONG], params)[0]  # 30 tokens: long factors for every token, the first 12 included
    assert out.num_cached_tokens == 0
    fresh = LLM(str(files.folder), dtype="float32", block_size=BLOCK, enable_prefix_caching=False)
    assert out.outputs[0].token_ids == fresh.generate([LONG], params)[0].outputs[0].token_ids
    again = llm.generate([LONG[:28] + [5, 6]], params)[0]  # another long prompt does share the long blocks
    assert again.num_cached_tokens >= 24
