"""X-LoRA through mistral.rs's selectors and its non-granular scalings, PEFT's XLoraModel the oracle.

Which.XLora / XLoraGGUF / XLoraGGML (an ordering file naming the X-LoRA model's adapters) run the X-LoRA model for
every request: greedy tokens equal PEFT's. `tgt_non_granular_index` N: after N completion tokens a request's scalings
stay those of the token at prompt length + N - 1; the oracle is PEFT with its classifier's output fixed so in the
test, each request with its own prompt length, and the fixed tokens' steps skip the scaling pass."""

from __future__ import annotations

import contextlib
import copy
import json

import peft
import pytest
import torch

from mistralpy import LLM, Runner, SamplingParams, Which
from mistralpy.errors import InvalidRequestError
from mistralpy.lora.xlora.classifier import XLoraClassifier
from mistralpy.server.protocol import CompletionRequest

from .lora_adapters import ALL_TARGETS, peft_logits
from .model_steps import reference_greedy
from .test_lora import PROMPT, _check_against
from .xlora_models import make_xlora


@pytest.fixture(scope="module")
def xlora(tiny_llama, tmp_path_factory):
    """The X-LoRA model (3 adapters, top-2, layerwise), its ordering file, PEFT's model of it."""
    root = tmp_path_factory.mktemp("xlora_which")
    reference = make_xlora(tiny_llama[0], root / "xl", seed=21, num_adapters=3, top_k_lora=2, layerwise_scalings=True)
    ordering = {"base_model_id": str(tiny_llama[1]), "order": ["0", "1", "2"], "layers": _layers(tiny_llama[0])}
    (root / "ordering.json").write_text(json.dumps(ordering))
    return root, reference


def _layers(base) -> dict[str, int]:
    """The ordering's layers as mistral.rs's scripts/create_ordering.py makes them: PEFT's LoRA layers of the adapters'
    target modules, numbered in module order (the script's transformers add_adapter is PEFT's inject_adapter)."""
    from peft.tuners import lora

    model = peft.inject_adapter_in_model(peft.LoraConfig(target_modules=ALL_TARGETS), copy.deepcopy(base))
    names = [n.split("lora_A.")[0] for n, m in model.named_modules() if isinstance(m, lora.Linear)]
    return {name.rstrip("."): i for i, name in enumerate(names)}


@contextlib.contextmanager
def fixed_after(reference, threshold: int):
    """PEFT's X-LoRA with the scalings of positions >= threshold replaced by those of position threshold - 1."""
    classifier = reference.base_model.internal_xlora_classifier
    forward = classifier.forward

    def fixed(*args, **kwargs):
        scalings = forward(*args, **kwargs).clone()
        if scalings.shape[1] > threshold:
            scalings[:, threshold:] = scalings[:, threshold - 1 : threshold]
        return scalings

    classifier.forward = fixed
    try:
        yield reference
    finally:
        del classifier.forward


def _text(runner: Runner, n: int = 5, **fields) -> str:
    request = CompletionRequest(model="default", prompt=PROMPT, max_tokens=n, temperature=0, ignore_eos=True, **fields)
    return runner.send_completion_request(request).choices[0].text


def test_which_xlora(tiny_llama, xlora):
    root, reference = xlora
    which = Which.XLora(str(root / "xl"), str(root / "ordering.json"), dtype="f32")  # the base from the ordering
    with Runner(which) as runner:
        assert _text(runner) == runner.detokenize_text(reference_greedy(reference, PROMPT, 5))


def test_which_xlora_gguf(tiny_llama, xlora):
    root, reference = xlora
    gguf = tiny_llama[2]
    which = Which.XLoraGGUF(str(gguf.parent), gguf.name, str(root / "xl"), str(root / "ordering.json"), dtype="f32")
    with Runner(which) as runner:
        assert _text(runner) == runner.detokenize_text(reference_greedy(reference, PROMPT, 5))


def test_which_xlora_ggml(tmp_path_factory, tmp_path):
    """A GGML (f32) base; the oracle is PEFT over the model it was written from, with llama.cpp's legacy RMSNorm
    epsilon (5e-6), which the GGML file does not record."""
    from .ggml_files import ggml_file, make_tiny

    tiny = make_tiny(tmp_path_factory)
    base = _with_eps(tiny.hf_model, 5e-6)
    reference = make_xlora(base, tmp_path / "xl", seed=8, top_k_lora=1, layerwise_scalings=True)
    (tmp_path / "o.json").write_text(json.dumps({"base_model_id": "hub/id", "order": ["0", "1"]}))
    path = ggml_file(tiny)
    which = Which.XLoraGGML(
        str(path.parent), path.name, str(tmp_path / "xl"), str(tmp_path / "o.json"), gqa=2, dtype="f32"
    )
    ids = [1, 5, 100, 300, 42, 7, 260, 383]
    with Runner(which) as runner:
        got = runner.send_completion_request(
            CompletionRequest(model="default", prompt=ids, max_tokens=4, temperature=0, ignore_eos=True)
        )
        assert got.choices[0].text == runner.detokenize_text(reference_greedy(reference, ids, 4))


def _with_eps(model, eps: float):
    import copy

    out = copy.deepcopy(model)
    for m in out.modules():
        if hasattr(m, "variance_epsilon"):
            m.variance_epsilon = eps
    out.config.rms_norm_eps = eps
    return out


def test_non_granular_runner(tiny_llama, xlora, monkeypatch):
    """N = 2 through Which.XLora: PEFT's greedy tokens with the scalings fixed after 2 completion tokens; the
    classifier runs for the prefill and the first 2 decode steps only."""
    root, reference = xlora
    calls = []
    forward = XLoraClassifier.forward
    monkeypatch.setattr(XLoraClassifier, "forward", lambda self, h: (calls.append(len(h)), forward(self, h))[1])
    which = Which.XLora(str(root / "xl"), str(root / "ordering.json"), tgt_non_granular_index=2, dtype="f32")
    with Runner(which) as runner:
        text = _text(runner, n=6)
    with fixed_after(reference, len(PROMPT) + 2) as fixed:
        expected = reference_greedy(fixed, PROMPT, 6)
        fixed_logits = peft_logits(fixed, PROMPT + expected)
    assert text == runner.detokenize_text(expected)
    changed = (fixed_logits - peft_logits(reference, PROMPT + expected))[len(PROMPT) + 2 :].abs().max()
    assert changed > 1e-2  # fixing the scalings changes the later logits: the comparison means something
    assert calls == [len(PROMPT), 1, 1]


def test_non_granular_batch(tiny_llama, xlora):
    """Two X-LoRA requests of different prompt lengths and a plain one in one batch: each X-LoRA request's scalings
    are fixed at its own position (logprobs within 1e-4 of PEFT with that request's fixing), the plain one is the
    base model; N = None keeps PEFT's granular scalings."""
    root, reference = xlora
    llm = LLM(str(tiny_llama[1]), dtype="float32", xlora=str(root / "xl"), xlora_non_granular=1)
    x = llm.xlora_request
    prompts = [PROMPT, PROMPT[3:], PROMPT[1:]]
    params = SamplingParams(temperature=0, max_tokens=5, logprobs=3, ignore_eos=True)
    outputs = llm.generate(prompts, params, lora_request=[x, x, None])
    for output in outputs[:2]:
        with fixed_after(reference, len(output.prompt_token_ids) + 1) as fixed:
            _check_against(fixed, output.prompt_token_ids, output)
    _check_against(tiny_llama[0], prompts[2], outputs[2])
    granular = LLM(str(tiny_llama[1]), dtype="float32", xlora=str(root / "xl"))
    _check_against(reference, PROMPT, granular.generate([PROMPT], params)[0])


def test_non_granular_prefix_cache(tiny_llama, xlora):
    """A request's cached blocks stop before its first fixed token: a repeated prompt reuses the blocks of its
    prompt; a prompt that continues an earlier answer reuses only the blocks before that answer's fixed token (the
    later ones hold K/V of fixed scalings, which this longer prompt computes per token); each equals PEFT."""
    root, reference = xlora
    llm = LLM(str(tiny_llama[1]), dtype="float32", xlora=str(root / "xl"), xlora_non_granular=1, block_size=4)
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=3, ignore_eos=True)
    first = llm.generate([PROMPT], params)[0]
    again = llm.generate([PROMPT], params)[0]
    longer = PROMPT + list(first.outputs[0].token_ids)  # 20 tokens; the first answer's fixed tokens from position 15
    follow = llm.generate([longer], params)[0]
    assert (first.num_cached_tokens, again.num_cached_tokens, follow.num_cached_tokens) == (0, 12, 12)
    assert again.outputs[0].token_ids == first.outputs[0].token_ids
    with fixed_after(reference, len(PROMPT) + 1) as fixed:
        _check_against(fixed, PROMPT, again)
    with fixed_after(reference, len(longer) + 1) as fixed:
        _check_against(fixed, longer, follow)


def test_non_granular_speculative(tiny_llama, xlora):
    """n-gram drafts past the fixed token: a step that verifies drafts takes the row of its own token at the fixed
    position (recorded again when that draft is rejected); greedy tokens and logprobs equal PEFT's."""
    root, reference = xlora
    spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 2}
    llm = LLM(str(tiny_llama[1]), dtype="float32", xlora=str(root / "xl"), xlora_non_granular=2,
              speculative_config=spec)  # fmt: skip
    prompt = PROMPT[:6] * 3  # repeats: the n-gram proposer finds drafts
    output = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, logprobs=2, ignore_eos=True))[0]
    with fixed_after(reference, len(prompt) + 2) as fixed:
        _check_against(fixed, prompt, output)


def test_non_granular_rows_follow_rejected_drafts():
    """The fixed row is the latest computation of the token at prompt length + N - 1: when that token was a draft
    and is computed again (rejected), the new row replaces the old for the later tokens; a plain request in the same
    step is left alone. The expected rows are read off by hand from the positions."""
    from mistralpy.engine.request import Request
    from mistralpy.engine.scheduler import ScheduledRequest
    from mistralpy.lora.xlora.non_granular import NonGranularScalings

    fixed = NonGranularScalings(2)
    req, plain = Request("x", [1, 2, 3, 4], SamplingParams()), Request("p", [5, 6], SamplingParams())
    req.lora_slot = 0

    def step(start: int, n: int) -> list[float]:
        plan = fixed.plan([ScheduledRequest(plain, 1, 2), ScheduledRequest(req, n, start)])
        scalings = torch.tensor([0.0] + [10.0 * start + i for i in range(n)]).view(-1, 1, 1)  # one number a token
        out = plan.apply(scalings)
        fixed.record(plan, out)
        assert plan.scaling_keep.tolist() == [False] + [start < 6] * n  # the fixed steps skip the scaling pass
        return out.flatten().tolist()

    assert step(4, 3) == [0, 40, 41, 41]  # positions 4, 5 (a draft), 6 (a draft): 6 takes 5's row
    assert step(5, 3) == [0, 50, 50, 50]  # 5 rejected and computed again: its new row, for 6 and 7
    assert step(8, 1) == [0, 50]  # a later step: the recorded row, no scaling pass
    assert req.cache_limit == 6


def test_serve_flag():
    import argparse

    from mistralpy.config import EngineConfig
    from mistralpy.lora.xlora.cli import xlora_options
    from mistralpy.server.serve import add_serve_args

    p = argparse.ArgumentParser()
    add_serve_args(p)
    args = p.parse_args(["--xlora", "xl", "--tgt-non-granular-index", "3"])
    assert xlora_options(args)["xlora_non_granular"] == 3
    with pytest.raises(InvalidRequestError, match="tgt_non_granular_index must be an integer >= 1, got 0"):
        EngineConfig(xlora="xl", xlora_non_granular=0)


def test_bad_selectors(tiny_llama, xlora, tmp_path):
    root, _ = xlora
    (tmp_path / "o.json").write_text(json.dumps({"base_model_id": str(tiny_llama[1]), "order": ["1", "0", "2"]}))
    with pytest.raises(InvalidRequestError, match=r"order \['1', '0', '2'\] is not the X-LoRA model's adapters"):
        Runner(Which.XLora(str(root / "xl"), str(tmp_path / "o.json")))
    layers = {**_layers(tiny_llama[0]), "model.layers.0.self_attn.k_proj": 0}
    (tmp_path / "l.json").write_text(json.dumps({"base_model_id": str(tiny_llama[1]), "layers": layers}))
    with pytest.raises(InvalidRequestError, match="layers gives 'model.layers.0.self_attn.k_proj' the index 0"):
        Runner(Which.XLora(str(root / "xl"), str(tmp_path / "l.json")))
    for bad in (0, True, "3"):
        with pytest.raises(InvalidRequestError, match="tgt_non_granular_index must be an integer >= 1"):
            Runner(Which.XLora(str(root / "xl"), str(root / "ordering.json"), tgt_non_granular_index=bad))
    with pytest.raises(InvalidRequestError, match="tgt_non_granular_index needs an X-LoRA model"):
        LLM(str(tiny_llama[1]), xlora_non_granular=2)
    with pytest.raises(InvalidRequestError, match="is not an X-LoRA model"):
        Runner(Which.XLora(str(tiny_llama[1]), str(root / "ordering.json")))
    with pytest.raises(InvalidRequestError, match=r"Which.XLoraGGUF\(topology='x'\) is not supported"):
        Which.XLoraGGUF("m", "m.gguf", str(root / "xl"), str(root / "ordering.json"), topology="x")
