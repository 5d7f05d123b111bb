"""The Llama model against transformers (fp32): logits for prefill, chunked prefill and decode; greedy tokens."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model

from .model_steps import BLOCK, decode, prefill, reference_greedy, reference_logits


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_logits_match_transformers(tiny_llama, fmt):
    hf_model, folder, gguf_path = tiny_llama
    model = load_model(open_model_source(folder if fmt == "hf" else gguf_path), torch.float32)
    runner = ModelRunner(model, num_blocks=64, block_size=BLOCK, dtype=torch.float32)
    prompt = torch.randint(0, 49152, (22,), generator=torch.Generator().manual_seed(1)).tolist()
    ref = reference_logits(hf_model, prompt + [7, 8, 9])
    with torch.inference_mode():
        # Chunked prefill: 13 tokens, then 9 more attending to the cached 13.
        logits = torch.cat([prefill(runner, prompt[:13], 0), prefill(runner, prompt[13:], 13)])
        torch.testing.assert_close(logits, ref[:22], atol=1e-4, rtol=0)
        for i, token in enumerate([7, 8, 9]):
            torch.testing.assert_close(decode(runner, token, 22 + i), ref[22 + i], atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_greedy_tokens_match_transformers(tiny_llama, fmt):
    hf_model, folder, gguf_path = tiny_llama
    llm = LLM(str(folder if fmt == "hf" else gguf_path), dtype="float32", block_size=BLOCK)
    prompts = [[5, 100, 2000, 31, 7, 9], [1000 + i for i in range(17)]]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    for prompt, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == reference_greedy(hf_model, prompt, 24)
        assert out.outputs[0].finish_reason == "length"


@pytest.mark.parametrize(
    "overrides",
    [
        dict(tie=True),
        dict(rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position_embeddings=16)),
        dict(rope_scaling=dict(rope_type="linear", factor=2.0)),
    ],
    ids=["tied", "llama3-rope", "linear-rope"],
)  # fmt: skip
def test_variants_match_transformers(tmp_path, tokenizer_dir, overrides):
    from .helpers import llama_to_gguf, make_tiny_llama

    hf_model = make_tiny_llama(tmp_path, seed=3, **overrides)
    sources = [tmp_path]
    if overrides.get("tie"):
        llama_to_gguf(hf_model, tmp_path / "tied.gguf")
        sources.append(tmp_path / "tied.gguf")
    prompt = list(range(40, 80))  # 40 positions: past original_max_position_embeddings of the llama3 variant
    ref = reference_logits(hf_model, prompt)
    for source in sources:
        model = load_model(open_model_source(source), torch.float32)
        runner = ModelRunner(model, num_blocks=16, block_size=BLOCK, dtype=torch.float32)
        with torch.inference_mode():
            torch.testing.assert_close(prefill(runner, prompt, 0), ref, atol=1e-4, rtol=0)
