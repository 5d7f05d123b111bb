"""Weight merging against PEFT (the oracle): one adapter folded into a full-precision base equals PEFT's
merge_and_unload, a weighted sum equals PEFT's add_weighted_adapter (combination_type="cat": exactly
sum_i w_i * delta_i), within 1e-4 in fp32; into a quantized base, the merged blocks are gguf-py's quantization of
gguf-py's dequantized base plus the delta (computed here from the adapter's tensors)."""

from __future__ import annotations

import copy
import json

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mistralpy import LLM, SamplingParams
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.errors import InvalidRequestError, LoRAAdapterError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.lora.merge import MERGE_TYPES, merge_adapters, merge_list
from mistralpy.quant.gguf_dequant import SUPPORTED_TYPES
from mistralpy.quant.quantized_linear import QuantizedLinear

from .lora_adapters import make_adapter, peft_logits
from .model_steps import BLOCK, prefill, reference_greedy

PROMPT = torch.randint(3, 49152, (12,), generator=torch.Generator().manual_seed(7)).tolist()


def merged_logits(source, merges, **load) -> torch.Tensor:
    model = load_model(open_model_source(source), torch.float32, **load)
    merge_adapters(model, merges, torch.float32)
    runner = ModelRunner(model, num_blocks=16, block_size=BLOCK, dtype=torch.float32)
    with torch.inference_mode():
        return prefill(runner, PROMPT, 0)


def test_one_adapter_equals_peft_merge_and_unload(family_files, tmp_path):
    files = family_files("llama")
    peft_model = make_adapter(files.reference, tmp_path / "a", seed=3, r=8, alpha=16)
    expected = peft_logits(peft_model.merge_and_unload(), PROMPT)
    assert (expected - peft_logits(files.reference, PROMPT)).abs().max() > 0.5
    torch.testing.assert_close(merged_logits(files.folder, [(str(tmp_path / "a"), 1.0)]), expected, atol=1e-4, rtol=0)


def test_weighted_sum_equals_peft_cat(family_files, tmp_path):
    """Two adapters of different ranks and targets (qwen2: biased q/k/v), weights 0.7 and -0.4."""
    import peft

    files = family_files("qwen2")
    make_adapter(files.reference, tmp_path / "a", seed=4, r=4)
    make_adapter(files.reference, tmp_path / "b", seed=5, r=8, targets=["q_proj", "v_proj", "down_proj"])
    model = peft.PeftModel.from_pretrained(copy.deepcopy(files.reference), tmp_path / "a", adapter_name="a")
    model.load_adapter(tmp_path / "b", adapter_name="b")
    model.add_weighted_adapter(["a", "b"], [0.7, -0.4], "mix", combination_type="cat")
    model.set_adapter("mix")
    expected = peft_logits(model.eval(), PROMPT)
    got = merged_logits(files.folder, [(str(tmp_path / "a"), 0.7), (str(tmp_path / "b"), -0.4)])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_llm_lora_merge_greedy(family_files, tmp_path):
    files = family_files("mistral")
    peft_model = make_adapter(files.reference, tmp_path / "a", seed=6, r=4)
    llm = LLM(str(files.folder), dtype="float32", lora_merge=[str(tmp_path / "a")])
    out = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0]
    assert out.outputs[0].token_ids == reference_greedy(peft_model.merge_and_unload(), PROMPT, 5)


def _delta(folder, module: str) -> np.ndarray:
    """scale * B @ A of one module, from the adapter's files (float32 numpy)."""
    tensors = load_file(folder / "adapter_model.safetensors")
    config = json.loads((folder / "adapter_config.json").read_text())
    prefix = f"base_model.model.{module}"
    a, b = tensors[f"{prefix}.lora_A.weight"].numpy(), tensors[f"{prefix}.lora_B.weight"].numpy()
    return (b @ a) * np.float32(config["lora_alpha"] / config["r"])


def test_quantized_base_requantized_as_gguf_py(family_files, tmp_path):
    files = family_files("llama")
    make_adapter(files.reference, tmp_path / "a", seed=8, r=4, targets=["o_proj", "down_proj"])
    before = load_model(open_model_source(files.gguf_q8), torch.float32, weights="quantized")
    after = load_model(open_model_source(files.gguf_q8), torch.float32, weights="quantized")
    merge_adapters(after, [(str(tmp_path / "a"), 1.0)], torch.float32)
    changed = 0
    for name in ("model.layers.0.self_attn.o_proj", "model.layers.1.mlp.down_proj"):
        old, new = before.get_submodule(name), after.get_submodule(name)
        assert isinstance(new, QuantizedLinear) and new.qtype == gguf.GGMLQuantizationType.Q8_0
        target = old.dequantize().numpy() + _delta(tmp_path / "a", name)
        blocks = gguf.quants.quantize(target, gguf.GGMLQuantizationType.Q8_0)
        expected = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q8_0).reshape(target.shape)
        got = new.dequantize().numpy()
        # float32 sums in another order may put a value on the other side of a rounding midpoint: one step, rarely
        step = np.abs(target).reshape(-1, 32).max(1, keepdims=True) / 127
        assert (np.abs(got - expected).reshape(-1, 32) <= step * 1.001).all()
        assert (got == expected).mean() > 0.999
        changed += (got != old.dequantize().numpy()).mean()
    assert changed > 0.5  # the delta moved most weights: the comparison means something
    untouched = "model.layers.0.self_attn.qkv_proj"
    assert torch.equal(before.get_submodule(untouched).dequantize(), after.get_submodule(untouched).dequantize())


def test_every_gguf_type_a_linear_holds_is_mergeable():
    """requantize's error for an unknown type is unreachable from a GGUF file: every type we decode, we re-quantize
    (the new ones: tests/test_lora_merge_types.py)."""
    assert set(MERGE_TYPES) == {t.name for t in SUPPORTED_TYPES}


@pytest.mark.parametrize("bad", [5, [("a", "x")], [("a",)], [("a", float("nan"))], [("a", True)], [""]])
def test_bad_merge_lists(bad):
    with pytest.raises(InvalidRequestError):
        merge_list(bad)
    assert merge_list(["a", ("b", 2)]) == [("a", 1.0), ("b", 2.0)]


def test_bad_adapter_fails_the_load(tiny_llama, tmp_path):
    with pytest.raises(LoRAAdapterError, match="does not exist"):
        LLM(str(tiny_llama[1]), dtype="float32", lora_merge=[str(tmp_path / "nowhere")])
