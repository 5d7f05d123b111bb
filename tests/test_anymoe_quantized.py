"""AnyMoE on a quantized base: the tiny Llama as a GGUF Q8_0 file (weights kept quantized: every expert's projections
are the quantized linears, the LoRA experts' deltas beside them), the same LoRA experts and training set as
tests/test_anymoe.py; on held-out prompts the trained gates route to the prompt's expert >= 90% of the time. The
Runner's anymoe_config reads the saved gates back."""

from __future__ import annotations

import gguf
import pytest
import torch

from mistralpy import LLM, Runner, Which
from mistralpy.lora.anymoe import build as anymoe_build
from mistralpy.lora.anymoe.moe_mlp import MoeMlp
from mistralpy.lora.layer import LoRALinear
from mistralpy.quant.quantized_linear import QuantizedLinear

from .helpers import llama_to_gguf
from .test_anymoe import _assert_routes_held_out_prompts, _config, experts  # noqa: F401 (experts: the fixture)


def test_gates_route_on_a_q8_0_base(tiny_llama, experts, tmp_path, monkeypatch):  # noqa: F811
    folder, _ = experts
    path = tmp_path / "tiny-q8_0.gguf"
    llama_to_gguf(tiny_llama[0], path, qtypes={"": gguf.GGMLQuantizationType.Q8_0})
    config = _config(folder, gate_model_id=str(tmp_path / "gates"))
    llm = LLM(str(path), dtype="float32", weights="quantized", anymoe=config, enable_prefix_caching=False)
    mixtures = [m for m in llm.engine.model_runner.model.modules() if isinstance(m, MoeMlp)]
    assert len(mixtures) == tiny_llama[0].config.num_hidden_layers
    for mixture in mixtures:
        base, *loras = mixture.experts
        projections = [m for name, m in base.named_children() if name.endswith("proj")]
        assert projections and all(isinstance(m, QuantizedLinear) for m in projections)  # expert 0: the base MLP
        for expert in loras:
            layers = [m for m in expert.children() if isinstance(m, LoRALinear)]
            assert layers and all(isinstance(m.base, QuantizedLinear) for m in layers)
    _assert_routes_held_out_prompts(llm)
    # mistral.rs's way: Runner(anymoe_config=...) over the same file reads the saved gates instead of training
    monkeypatch.setattr(anymoe_build, "train_gates", lambda *a, **k: pytest.fail("trained again"))
    with Runner(Which.GGUF(str(path), path.name, dtype="f32"), anymoe_config=config) as runner:
        gates = runner.call(lambda e: [m.gate.weight for m in e.model_runner.model.modules() if isinstance(m, MoeMlp)])
    assert len(gates) == len(mixtures)
    for got, trained in zip(gates, mixtures, strict=True):
        assert torch.equal(got, trained.gate.weight)
