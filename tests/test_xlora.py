"""X-LoRA against PEFT's XLoraModel (the oracle) on a tiny random Llama in fp32: logits of a chunked prefill and
decode steps (each pass on its own KV cache) equal PEFT's full-sequence forward within 1e-4, and the classifier's
scalings equal PEFT's get_latest_scalings, for each family of options; a quantized (GGUF Q8_0) base, a GGML base."""

from __future__ import annotations

import pytest
import torch

from mistralpy.engine.model_runner import ModelRunner
from mistralpy.errors import LoRAAdapterError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.lora.xlora.checkpoint import read_xlora
from mistralpy.lora.xlora.layer import XLoraLinear
from mistralpy.lora.xlora.model import XLoraModel
from mistralpy.quant.quantized_linear import QuantizedLinear

from .lora_adapters import peft_logits
from .model_steps import BLOCK, decode, prefill
from .test_lora import _dequantized_copy
from .xlora_models import make_xlora, xlora_logits

PROMPT = torch.randint(3, 49152, (13,), generator=torch.Generator().manual_seed(7)).tolist()
STEPS = [21, 22, 23]
VARIANTS = {
    "default": {},
    "deep_classifier": {"xlora_depth": 3, "xlora_size": 24},
    "no_dropout_layers": {"xlora_depth": 2, "xlora_dropout_p": 0.0},
    "top_k": {"num_adapters": 3, "top_k_lora": 2},
    "softmax_topk": {"num_adapters": 3, "top_k_lora": 2, "enable_softmax": False, "enable_softmax_topk": True},
    "temperature": {"softmax_temperature": 0.3},
    "no_softmax": {"enable_softmax": False, "global_scaling_weight": 0.6},
    "layerwise": {"layerwise_scalings": True, "xlora_depth": 2},
    "scaling_pass_value": {"scaling_pass_value": 0.5, "targets": ["q_proj", "v_proj", "down_proj"]},
}


def xlora_runner(source, folder, dtype=torch.float32, **load) -> ModelRunner:
    model = XLoraModel(load_model(open_model_source(source), dtype, **load), read_xlora(folder), dtype)
    return ModelRunner(model, num_blocks=64, block_size=BLOCK, dtype=dtype)


def step_logits(runner: ModelRunner) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and scalings of PROMPT (two prefill chunks) then STEPS (decode steps), on the runner's caches."""
    rows, scalings = [], []
    with torch.inference_mode():
        split = len(PROMPT) // 2
        for start, chunk in ((0, PROMPT[:split]), (split, PROMPT[split:])):
            rows.append(prefill(runner, chunk, start))
            scalings.append(runner.model.latest)
        for i, token in enumerate(STEPS):
            rows.append(decode(runner, token, len(PROMPT) + i).unsqueeze(0))
            scalings.append(runner.model.latest)
    return torch.cat(rows), torch.cat(scalings)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_peft(family_files, tmp_path, variant):
    files = family_files("llama")
    reference = make_xlora(files.reference, tmp_path / "x", seed=3, **VARIANTS[variant])
    expected, expected_scalings = xlora_logits(reference, PROMPT + STEPS)
    base = peft_logits(files.reference, PROMPT + STEPS)
    assert (expected - base).abs().max() > 0.5  # the adapters change the logits: the comparison means something
    got, scalings = step_logits(xlora_runner(files.folder, tmp_path / "x"))
    torch.testing.assert_close(scalings, expected_scalings, atol=1e-5, rtol=0)
    # float32 sums in oneDNN's kernel order for this CPU: up to 1.13e-4 apart on an AMX host (2026-12-05)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)


def test_quantized_base(family_files, tmp_path):
    """A Q8_0 GGUF base stays quantized under the X-LoRA layers; the oracle is PEFT on the dequantized weights, and
    the tolerance is the base model's own measured error against them, times 2 (as tests/test_lora.py)."""
    files = family_files("llama")
    import gguf

    base = _dequantized_copy(files.reference, gguf.GGMLQuantizationType.Q8_0)
    reference = make_xlora(base, tmp_path / "x", seed=5, layerwise_scalings=True)
    runner = xlora_runner(files.gguf_q8, tmp_path / "x", weights="quantized")
    wrapped = [m for m in runner.model.modules() if isinstance(m, XLoraLinear)]
    assert wrapped and all(isinstance(m.base, QuantizedLinear) for m in wrapped)
    ids = PROMPT + STEPS
    base_runner = ModelRunner(
        load_model(open_model_source(files.gguf_q8), torch.float32, weights="quantized"), 64, BLOCK, torch.float32
    )
    with torch.inference_mode():
        base_got = torch.cat([prefill(base_runner, PROMPT, 0)] + [
            decode(base_runner, t, len(PROMPT) + i).unsqueeze(0) for i, t in enumerate(STEPS)
        ])  # fmt: skip
    base_error = (base_got - peft_logits(base, ids)).abs().max().item()
    expected, _ = xlora_logits(reference, ids)
    error = (step_logits(runner)[0] - expected).abs().max().item()
    effect = (expected - peft_logits(base, ids)).abs().max().item()
    assert error <= 2 * base_error + 1e-4, (error, base_error)
    assert effect > 20 * (2 * base_error + 1e-4)


def test_bad_checkpoints(family_files, tmp_path):
    import json

    files = family_files("llama")
    make_xlora(files.reference, tmp_path / "x", seed=3, xlora_depth=2)
    config_path = tmp_path / "x" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "xlora_depth": 3}))
    with pytest.raises(LoRAAdapterError, match="classifier's linear layers are"):
        read_xlora(tmp_path / "x")
    config_path.write_text(json.dumps({**config, "top_k_lora": 5}))
    with pytest.raises(LoRAAdapterError, match="top_k_lora 5 exceeds"):
        read_xlora(tmp_path / "x")
    config_path.write_text(json.dumps({**config, "layerwise_scalings": True}))
    model = load_model(open_model_source(files.folder), torch.float32)
    with pytest.raises(LoRAAdapterError, match="classifier gives 2 outputs"):
        XLoraModel(model, read_xlora(tmp_path / "x"), torch.float32)
    with pytest.raises(LoRAAdapterError, match="no adapter_config.json"):
        read_xlora(tmp_path / "missing")


def test_ggml_base(tmp_path_factory, tmp_path):
    """A legacy GGML (ggjt v3, f32) base: the same logits as PEFT on the model it was written from."""
    from mistralpy.loader import GGMLParams

    from .ggml_files import ggml_file, make_tiny

    tiny = make_tiny(tmp_path_factory)
    reference = make_xlora(tiny.hf_model, tmp_path / "x", seed=8, top_k_lora=1, layerwise_scalings=True)
    source = open_model_source(ggml_file(tiny), GGMLParams(gqa=2, rms_norm_eps=1e-5))
    model = XLoraModel(load_model(source, torch.float32), read_xlora(tmp_path / "x"), torch.float32)
    runner = ModelRunner(model, num_blocks=16, block_size=BLOCK, dtype=torch.float32)
    ids = [1, 5, 100, 300, 42, 7, 260, 383, 9, 11, 12]
    with torch.inference_mode():
        got = torch.cat(
            [prefill(runner, ids[:-2], 0)] + [decode(runner, t, 9 + i).unsqueeze(0) for i, t in enumerate(ids[-2:])]
        )
    torch.testing.assert_close(got, xlora_logits(reference, ids)[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["qwen2", "phi3"])
def test_other_families_layerwise(family_files, tmp_path, name):
    """Layerwise scalings follow PEFT's LoRA-layer numbering, which is each family's HF module order (Phi-3: fused
    projections, o_proj first)."""
    files = family_files(name)
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"] if name == "phi3" else None
    reference = make_xlora(files.reference, tmp_path / "x", seed=4, targets=targets, layerwise_scalings=True)
    expected, expected_scalings = xlora_logits(reference, PROMPT + STEPS)
    got, scalings = step_logits(xlora_runner(files.folder, tmp_path / "x"))
    torch.testing.assert_close(scalings, expected_scalings, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
