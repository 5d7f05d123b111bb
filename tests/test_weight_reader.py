"""How loading builds quantized modules: each as soon as its weights are read, with its bias; and what it costs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from mistralpy import LLM
from mistralpy.errors import ModelLoadError


def _edited_copy(folder, tmp_path, edit) -> str:
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    (weights,) = copy.glob("*.safetensors")
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights, metadata={"format": "pt"})
    return str(copy)


def _qkv_biases(layer: int) -> list[str]:
    return [f"model.layers.{layer}.self_attn.{p}_proj.bias" for p in "qkv"]


def test_a_missing_bias_of_a_quantized_layer_is_an_error(family_files, tmp_path):
    """Qwen2's q/k/v have biases: missing ones must fail the load, not leave the quantized layer without them."""

    def drop(tensors):
        for name in _qkv_biases(1):
            del tensors[name]

    folder = _edited_copy(family_files("qwen2").folder, tmp_path, drop)
    with pytest.raises(ModelLoadError, match=r"missing \['model\.layers\.1\.self_attn\.qkv_proj\.bias'\]"):
        LLM(folder, dtype="bfloat16", quantization="q8_0")


def test_quantized_layers_get_their_biases(family_files, tmp_path):
    """The fused q/k/v is built once its weights and its three biases are read, whatever their order."""
    stored = {}

    def randomise(tensors):
        for layer in range(2):
            for name in _qkv_biases(layer):
                tensors[name] = stored[name] = torch.randn_like(tensors[name])

    folder = _edited_copy(family_files("qwen2").folder, tmp_path, randomise)
    llm = LLM(folder, dtype="bfloat16", quantization="q8_0")
    for layer, module in enumerate(llm.engine.model_runner.model.model.layers):
        expected = torch.cat([stored[name] for name in _qkv_biases(layer)]).to(torch.bfloat16)
        assert torch.equal(module.self_attn.qkv_proj.bias, expected)


def test_loading_does_not_import_torch_dynamo(tiny_llama):
    """A random init on the meta device imports torch._dynamo, ~70 MB resident for nothing: the layers start
    uninitialised instead, and nothing else on the way to a first token needs it."""
    code = (
        "import sys; from mistralpy import LLM, SamplingParams; "
        f"LLM({str(tiny_llama[2])!r}).generate('Hi', SamplingParams(max_tokens=2)); "
        "print('torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
