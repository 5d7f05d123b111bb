"""Bad LoRA adapters and bad LoRA requests: each a LoRAAdapterError / InvalidRequestError naming the problem and the
file; the engine keeps serving afterwards."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError, LoRAAdapterError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.lora import LoRARequest
from mistralpy.lora.manager import LoRAManager

from .helpers import make_tiny_llama
from .lora_adapters import make_adapter

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
A_Q = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
B_Q = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


@pytest.fixture(scope="module")
def good(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("good_adapter")
    make_adapter(tiny_llama[0], folder, seed=1)
    return folder


@pytest.fixture(scope="module")
def manager(tiny_llama):
    model = load_model(open_model_source(tiny_llama[1]), torch.float32)
    return LoRAManager(model, max_loras=2, max_lora_rank=4, dtype=torch.float32)


def _copy(good, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(good, folder)
    return folder


def _edit_tensors(folder, edit) -> None:
    tensors = load_file(folder / WEIGHTS)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS)


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / CONFIG).read_text())
    config.update(changes)
    (folder / CONFIG).write_text(json.dumps(config))


def _load_error(manager, folder) -> str:
    with pytest.raises(LoRAAdapterError) as e:
        manager.acquire(LoRARequest("bad", 99, str(folder)), set())
    assert str(folder) in str(e.value)
    assert manager.slot_of(99) is None
    return str(e.value)


def test_rank_mismatch(manager, good, tmp_path):
    folder = _copy(good, tmp_path)
    _edit_tensors(folder, lambda t: t.update({B_Q: torch.randn(t[B_Q].shape[0], 3)}))
    assert "rank mismatch" in _load_error(manager, folder) and "q_proj" in _load_error(manager, folder)


def test_unknown_target_module(manager, good, tmp_path):
    folder = _copy(good, tmp_path)
    name = "base_model.model.model.layers.0.self_attn.rotary_proj.lora_{}.weight"
    _edit_tensors(folder, lambda t: t.update({name.format("A"): t.pop(A_Q), name.format("B"): t.pop(B_Q)}))
    message = _load_error(manager, folder)
    assert "unknown target module" in message and "rotary_proj" in message


def test_layer_past_the_model(manager, good, tmp_path):
    folder = _copy(good, tmp_path)
    name = "base_model.model.model.layers.7.self_attn.q_proj.lora_{}.weight"
    _edit_tensors(folder, lambda t: t.update({name.format("A"): t.pop(A_Q), name.format("B"): t.pop(B_Q)}))
    assert "layers.7.self_attn.q_proj" in _load_error(manager, folder)


def test_wrong_hidden_size(manager, tmp_path):
    other = make_tiny_llama(tmp_path / "wide", hidden_size=96, intermediate_size=128)
    make_adapter(other, tmp_path / "adapter", seed=1)
    message = _load_error(manager, tmp_path / "adapter")
    assert "96" in message and "layer gives 64" in message and "another size" in message


def test_corrupt_safetensors(manager, good, tmp_path):
    folder = _copy(good, tmp_path)
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    assert "not a readable safetensors file" in _load_error(manager, folder)
    (folder / WEIGHTS).write_bytes(b"\xff" * 64)
    assert "not a readable safetensors file" in _load_error(manager, folder)


def test_other_architecture(manager, good, tmp_path):
    folder = _copy(good, tmp_path)
    _edit_config(folder, auto_mapping={"base_model_class": "Qwen2ForCausalLM", "parent_library": "x"})
    assert "made for Qwen2ForCausalLM" in _load_error(manager, folder)
    _edit_config(folder, auto_mapping={"base_model_class": "GPT2LMHeadModel", "parent_library": "x"})
    assert "GPT2LMHeadModel, an architecture mistralpy does not run" in _load_error(manager, folder)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"use_dora": True}, "use_dora=True is not supported"),
        ({"peft_type": "IA3"}, "only LORA adapters"),
        ({"r": 2}, "r=2"),
        ({"bias": "all"}, "bias='all' is not supported"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ],
)
def test_config_options_refused(manager, good, tmp_path, change, words):
    folder = _copy(good, tmp_path)
    _edit_config(folder, **change)
    assert words in _load_error(manager, folder)


def test_missing_files(manager, good, tmp_path):
    assert "does not exist" in _load_error(manager, tmp_path / "nowhere")
    folder = _copy(good, tmp_path)
    (folder / WEIGHTS).unlink()
    assert "has no adapter_model.safetensors" in _load_error(manager, folder)
    (folder / CONFIG).write_text("{not json")
    assert "has no" in _load_error(manager, folder)


def test_rank_over_max_lora_rank(manager, tiny_llama, tmp_path):
    make_adapter(tiny_llama[0], tmp_path / "big", seed=1, r=8)
    assert "exceeds max_lora_rank 4" in _load_error(manager, tmp_path / "big")


def test_slots_full_of_busy_adapters(tiny_llama, good, tmp_path):
    model = load_model(open_model_source(tiny_llama[1]), torch.float32)
    manager = LoRAManager(model, max_loras=1, max_lora_rank=4, dtype=torch.float32)
    second = _copy(good, tmp_path)
    assert manager.acquire(LoRARequest("a", 1, str(good)), set()) == 0
    with pytest.raises(InvalidRequestError, match="all 1 LoRA slots"):
        manager.acquire(LoRARequest("b", 2, str(second)), busy={0})
    assert manager.acquire(LoRARequest("b", 2, str(second)), busy=set()) == 0  # the idle one is evicted
    assert manager.slot_of(1) is None and manager.slot_of(2) == 0


def test_lora_request_values():
    for args in [("", 1, "p"), ("a", 0, "p"), ("a", True, "p"), ("a", 1, "")]:
        with pytest.raises(InvalidRequestError):
            LoRARequest(*args)


def test_engine_errors_and_keeps_serving(tiny_llama, good, tmp_path):
    params = SamplingParams(max_tokens=2, temperature=0)
    plain = LLM(str(tiny_llama[1]), dtype="float32")
    with pytest.raises(InvalidRequestError, match="enable_lora=True"):
        plain.generate(["hello"], params, lora_request=LoRARequest("a", 1, str(good)))
    llm = LLM(str(tiny_llama[1]), dtype="float32", enable_lora=True, max_loras=1, max_lora_rank=4)
    with pytest.raises(LoRAAdapterError):
        llm.generate(["hello"], params, lora_request=LoRARequest("bad", 2, str(tmp_path / "nowhere")))
    with pytest.raises(InvalidRequestError, match="lora_request must be one LoRARequest or a list of 2"):
        llm.generate(["a", "b"], params, lora_request=[None])
    out = llm.generate(["hello", "hello"], params, lora_request=[LoRARequest("a", 1, str(good)), None])
    assert all(len(o.outputs[0].token_ids) == 2 for o in out)
