"""AnyMoE's mixture against an independent oracle: transformers' model whose mixed layers' MLP is replaced by
w0 * base MLP + w1 * expert MLP (the expert a fine-tuned model's MLP, or PEFT's LoRA-wrapped MLP), with gates fixed
to give every token the weights (w0, w1); logits of a chunked prefill and decode steps within 1e-4 (fp32)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mistralpy.engine.model_runner import ModelRunner
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.lora.anymoe import AnyMoeConfig
from mistralpy.lora.anymoe.build import attach_anymoe
from mistralpy.tokenizer import Tokenizer

from .lora_adapters import make_adapter
from .model_steps import BLOCK, decode, prefill

PROMPT = torch.randint(3, 49152, (11,), generator=torch.Generator().manual_seed(3)).tolist()
STEPS = [31, 32]
WEIGHTS = (0.3, 0.7)


class Mix(nn.Module):
    def __init__(self, base: nn.Module, expert: nn.Module) -> None:
        super().__init__()
        self.base, self.expert = base, expert

    def forward(self, x):
        return WEIGHTS[0] * self.base(x) + WEIGHTS[1] * self.expert(x)


def _fine_tuned(base: nn.Module, folder) -> nn.Module:
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".mlp." in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save_pretrained(folder)
    return model


def _oracle(base: nn.Module, expert_mlps: dict[int, nn.Module], ids: list[int]) -> torch.Tensor:
    model = copy.deepcopy(base)
    for i, mlp in expert_mlps.items():
        model.model.layers[i].mlp = Mix(model.model.layers[i].mlp, mlp)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def _ours(source, folder, expert_type: str, layers, **load) -> torch.Tensor:
    model = load_model(open_model_source(source), torch.float32, **load)
    config = AnyMoeConfig([str(folder)], dataset=[("apple", 1)], expert_type=expert_type, layers=layers, epochs=1)
    moe = attach_anymoe(model, config, Tokenizer.from_folder(folder.parent / "tok"), torch.float32, False)
    with torch.no_grad():
        for layer in moe.values():
            layer.gate.weight.zero_()
            layer.gate.bias.copy_(torch.tensor([math.log(w) for w in WEIGHTS]))
    runner = ModelRunner(model, num_blocks=64, block_size=BLOCK, dtype=torch.float32)
    with torch.inference_mode():
        rows = [prefill(runner, PROMPT[:5], 0), prefill(runner, PROMPT[5:], 5)]
        rows += [decode(runner, t, len(PROMPT) + i).unsqueeze(0) for i, t in enumerate(STEPS)]
    return torch.cat(rows)


@pytest.fixture
def workdir(tiny_llama, tmp_path):
    (tmp_path / "tok").mkdir()
    for f in tiny_llama[1].iterdir():
        if "token" in f.name:
            (tmp_path / "tok" / f.name).write_bytes(f.read_bytes())
    return tmp_path


@pytest.mark.parametrize("layers", [None, [1]])
def test_fine_tuned_expert(tiny_llama, workdir, layers):
    tuned = _fine_tuned(tiny_llama[0], workdir / "ft")
    mixed = layers or [0, 1]
    expected = _oracle(tiny_llama[0], {i: tuned.model.layers[i].mlp for i in mixed}, PROMPT + STEPS)
    got = _ours(tiny_llama[1], workdir / "ft", "fine_tuned", layers)
    assert (expected - _oracle(tiny_llama[0], {}, PROMPT + STEPS)).abs().max() > 0.05  # the expert matters
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_lora_expert(tiny_llama, workdir):
    peft_model = make_adapter(tiny_llama[0], workdir / "lora", seed=5, targets=["gate_proj", "up_proj", "down_proj"])
    layers = peft_model.base_model.model.model.layers
    expected = _oracle(tiny_llama[0], {i: layers[i].mlp for i in (0, 1)}, PROMPT + STEPS)
    got = _ours(tiny_llama[1], workdir / "lora", "lora_adapter", None)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
