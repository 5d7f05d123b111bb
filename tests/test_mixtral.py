"""Mixtral's sparse MoE: routing as transformers routes, batching that changes nothing, experts kept quantized.

A routing choice is discontinuous: where a token's 2nd and 3rd experts nearly tie, any rounding (bf16, quantized
weights) may swap them and change that token's output by a lot in a random model. The bf16 comparison therefore
replays the fp32 run's expert choices (weights still from the bf16 router) and counts swapped choices separately."""

from __future__ import annotations

import gguf
import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.config import ModelConfig
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.errors import UnsupportedArchitectureError
from mistralpy.layers import moe
from mistralpy.layers.linear import Linear
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.models.mixtral import MixtralForCausalLM
from mistralpy.quant.quantized_linear import QuantizedLinear

from .families.gguf_writer import write_gguf
from .test_families import BLOCK, GREEDY, PROMPT, STEPS, _prompts, decode, prefill

TOP_K = 2


@pytest.fixture(scope="module")
def mixtral(family_files):
    return family_files("mixtral")


@pytest.fixture(scope="module")
def q4_0_gguf(mixtral):
    path = mixtral.folder.parent / f"{mixtral.folder.name}.q4_0.gguf"
    write_gguf(mixtral.spec, mixtral.folder, mixtral.reference.config, path, gguf.GGMLQuantizationType.Q4_0)
    return path


def _hidden_states(n: int, hidden: int) -> torch.Tensor:
    return torch.randn(n, hidden, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_routing_matches_transformers(mixtral, fmt):
    """For each layer: the same experts in the same order, the same weights, and the same block output."""
    source = mixtral.folder if fmt == "hf" else mixtral.gguf
    model = load_model(open_model_source(source), torch.float32)
    x = _hidden_states(64, model.config.hidden_size)
    for ours, theirs in zip(model.model.layers, mixtral.reference.model.layers, strict=True):
        block = ours.block_sparse_moe
        with torch.no_grad():
            _, ref_weights, ref_ids = theirs.mlp.gate(x)
            weights, ids = moe.route(block.gate(x), block.top_k)
            assert torch.equal(ids, ref_ids)
            torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=0)
            assert ids.unique().numel() == len(block.experts)  # every expert serves some of these tokens
            torch.testing.assert_close(block(x), theirs.mlp(x.unsqueeze(0))[0], atol=1e-5, rtol=0)


def test_batched_greedy_equals_one_at_a_time(mixtral):
    """Requests batched together (experts then serve tokens of several requests at once) and chunked prefills give
    the tokens each request gets alone."""
    llm = LLM(str(mixtral.gguf), dtype="float32", block_size=BLOCK, max_num_batched_tokens=24)
    prompts = _prompts(6, seed=3)
    params = [SamplingParams(max_tokens=6 + 2 * i, **GREEDY) for i in range(len(prompts))]
    alone = [llm.generate([p], [sp])[0].outputs[0].token_ids for p, sp in zip(prompts, params, strict=True)]
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, params)] == alone


def test_gguf_experts_stay_quantized(mixtral, q4_0_gguf):
    model = load_model(open_model_source(q4_0_gguf), torch.bfloat16)
    experts = [e for layer in model.model.layers for e in layer.block_sparse_moe.experts]
    assert len(experts) == 4 * model.config.num_hidden_layers
    for expert in experts:
        assert not any(isinstance(m, Linear) for m in expert.modules())
        for proj in (expert.w13, expert.w2):
            assert isinstance(proj, QuantizedLinear) and proj.qtype == gguf.GGMLQuantizationType.Q4_0
    dense = load_model(open_model_source(q4_0_gguf), torch.float32, weights="dequantized")
    for q, d in zip(experts, (e for layer in dense.model.layers for e in layer.block_sparse_moe.experts), strict=True):
        assert torch.equal(q.w13.dequantize(), d.w13.weight) and torch.equal(q.w2.dequantize(), d.w2.weight)


def test_isq_quantizes_the_experts(mixtral):
    model = load_model(open_model_source(mixtral.folder), torch.bfloat16, quantization="q8_0")
    for layer in model.model.layers:
        for expert in layer.block_sparse_moe.experts:
            assert isinstance(expert.w13, QuantizedLinear) and isinstance(expert.w2, QuantizedLinear)


ROUTE = moe.route


class _Routes:
    """Stands in for `moe.route`: records each call's expert choices, or replays recorded ones (their weights then
    come from the router logits at hand)."""

    def __init__(self, replay: list[torch.Tensor] | None = None) -> None:
        self.ids: list[torch.Tensor] = []
        self.replay = replay

    def __call__(self, logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        weights, ids = ROUTE(logits, top_k)
        self.ids.append(ids)
        if self.replay is None:
            return weights, ids
        ids = self.replay[len(self.ids) - 1]
        weights = torch.softmax(logits.float(), dim=-1).gather(-1, ids)
        return weights / weights.sum(dim=-1, keepdim=True), ids


def _logits(path, dtype: torch.dtype) -> torch.Tensor:
    runner = ModelRunner(load_model(open_model_source(path), dtype), num_blocks=64, block_size=BLOCK, dtype=dtype)
    with torch.inference_mode():
        split = len(PROMPT) // 2 + 1
        pre = torch.cat([prefill(runner, PROMPT[:split], 0), prefill(runner, PROMPT[split:], split)])
        dec = torch.stack([decode(runner, t, len(PROMPT) + i) for i, t in enumerate(STEPS)])
    return torch.cat([pre, dec]).float()


def test_quantized_bf16_close_to_fp32(q4_0_gguf, monkeypatch):
    """Q4_0 experts on the int4 kernel in bf16 against the same file dequantized in fp32, with the fp32 run's expert
    choices replayed: every logit within 2% of the logit range and the same argmax at 90% of positions or more. Left
    to themselves, the bf16 router's choices differ from fp32's for at most 1 token in 10."""
    fp32 = _Routes()
    monkeypatch.setattr(moe, "route", fp32)
    ref = _logits(q4_0_gguf, torch.float32)
    bf16 = _Routes(replay=fp32.ids)
    monkeypatch.setattr(moe, "route", bf16)
    ours = _logits(q4_0_gguf, torch.bfloat16)
    spread = (ref.max() - ref.min()).item()
    assert (ours - ref).abs().max().item() <= 0.02 * spread
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.9
    agree = torch.cat(
        [(a.sort(-1).values == b.sort(-1).values).all(-1) for a, b in zip(fp32.ids, bf16.ids, strict=True)]
    )
    assert agree.float().mean().item() >= 0.9


def _config(**extra) -> ModelConfig:
    return ModelConfig(
        architecture="MixtralForCausalLM",
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        extra={"num_local_experts": 4, "num_experts_per_tok": TOP_K, **extra},
    )


@pytest.mark.parametrize(
    "extra",
    [{"num_experts_per_tok": 5}, {"num_local_experts": None}, {"hidden_act": "gelu"}, {"expert_gating_func": 2}],
)
def test_unsupported_moe_options_raise(extra):
    with torch.device("meta"), pytest.raises(UnsupportedArchitectureError):
        MixtralForCausalLM(_config(**extra))
