"""AnyMoE: a tiny Llama's MLPs mixed with two LoRA experts (random, and clearly different), the gates trained at load
on prompts of two kinds (words of two disjoint lists, one kind per expert); on held-out prompts the routing (each
gate's weights averaged over the prompt) picks the prompt's expert >= 90% of the time, and the mixture's logits lie
closer to that expert's model (PEFT with the adapter alone) than to the other's. The saved gates load back (no
training) and route the same; bad configs are clear errors."""

from __future__ import annotations

import json
import random

import pytest
import torch

from mistralpy import LLM
from mistralpy.errors import InvalidRequestError
from mistralpy.lora.anymoe import AnyMoeConfig
from mistralpy.lora.anymoe import build as anymoe_build
from mistralpy.lora.anymoe.moe_mlp import MoeMlp

from .lora_adapters import make_adapter, peft_logits

MLP = ["gate_proj", "up_proj", "down_proj"]
WORDS = [
    "apple banana cherry grape lemon mango melon olive peach pear plum berry orange lime kiwi".split(),
    "seven eight nine ten eleven twelve twenty thirty forty fifty sixty hundred thousand million zero".split(),
]


def _prompts(kind: int, n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choices(WORDS[kind], k=rng.randint(4, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def experts(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("anymoe")
    return folder, [make_adapter(tiny_llama[0], folder / f"e{k}", seed=40 + k, targets=MLP) for k in (1, 2)]


def _config(folder, **overrides) -> AnyMoeConfig:
    rng = random.Random(0)
    rows = [(p, kind + 1) for kind in (0, 1) for p in _prompts(kind, 16, rng)]
    options = dict(expert_type="lora_adapter", lr=0.05, epochs=40, batch_size=8, gate_model_id=str(folder / "gates"))
    return AnyMoeConfig([str(folder / "e1"), str(folder / "e2")], **{"dataset": rows, **options, **overrides})


def _routing(llm: LLM, prompts: list[str]) -> torch.Tensor:
    """(prompts, layers, experts): each gate's softmax weights averaged over each prompt's tokens, in a prefill."""
    layers = [m for m in llm.engine.model_runner.model.modules() if isinstance(m, MoeMlp)]
    rows: list[list[torch.Tensor]] = []
    hooks = [m.gate.register_forward_hook(lambda _m, _i, out: rows[-1].append(out.softmax(-1).mean(0))) for m in layers]
    try:
        for prompt in prompts:  # one at a time: a prompt's prefill is one forward
            rows.append([])
            llm.generate([prompt], _one_token())
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([torch.stack(r[: len(layers)]) for r in rows])


def _one_token():
    from mistralpy import SamplingParams

    return SamplingParams(temperature=0, max_tokens=1)


def _assert_routes_held_out_prompts(llm) -> tuple[list[tuple[str, int]], torch.Tensor]:
    """Each layer's gate sends >= 90% of 20 unseen prompts (10 of each kind) to the expert trained for their kind;
    the (prompt, expert) pairs and the routing weights."""
    rng = random.Random(1)
    held_out = [(p, kind + 1) for kind in (0, 1) for p in _prompts(kind, 10, rng)]
    routing = _routing(llm, [p for p, _ in held_out])
    labels = torch.tensor([e for _, e in held_out])
    accuracy = (routing.argmax(-1) == labels.unsqueeze(1)).float().mean(0)  # per layer
    assert (accuracy >= 0.9).all(), accuracy
    return held_out, routing


def test_gates_route_held_out_prompts(tiny_llama, experts, monkeypatch):
    folder, references = experts
    config = _config(folder, loss_csv_path=str(folder / "loss.csv"))
    llm = LLM(str(tiny_llama[1]), dtype="float32", anymoe=config, enable_prefix_caching=False)
    held_out, routing = _assert_routes_held_out_prompts(llm)
    losses = (folder / "loss.csv").read_text().splitlines()
    assert len(losses) == 1 + config.epochs and float(losses[-1].split(",")[1]) < float(losses[1].split(",")[1])
    # the mixture behaves like the routed expert: its logits lie closer to that expert's model than to the other's
    tokenizer = llm.get_tokenizer()
    for prompt, expert in held_out[::5]:
        ids = tokenizer.encode(prompt)
        out = llm.generate([ids], _logprobs_params())[0].outputs[0].logprobs[0]
        mine = {t: lp.logprob for t, lp in out.items()}
        dist = []
        for reference in references:
            ref = torch.log_softmax(peft_logits(reference, ids)[-1].double(), -1)
            dist.append(sum(abs(v - ref[t].item()) for t, v in mine.items()))
        assert dist[expert - 1] < dist[2 - expert], (prompt, dist)
    # the gates were saved: a second engine reads them (no training) and routes the same
    monkeypatch.setattr(anymoe_build, "train_gates", lambda *a, **k: pytest.fail("trained again"))
    again = LLM(str(tiny_llama[1]), dtype="float32", anymoe=config, enable_prefix_caching=False)
    torch.testing.assert_close(_routing(again, [p for p, _ in held_out[:4]]), routing[:4], atol=1e-6, rtol=0)


def _logprobs_params():
    from mistralpy import SamplingParams

    return SamplingParams(temperature=0, max_tokens=1, logprobs=20)


def test_bad_configs(tiny_llama, experts, tmp_path):
    folder, _ = experts
    with pytest.raises(InvalidRequestError, match="expert must be an index"):
        LLM(str(tiny_llama[1]), anymoe=_config(folder, dataset=[("a b", 3)], gate_model_id=None))
    with pytest.raises(InvalidRequestError, match="exactly one of dataset_json"):
        AnyMoeConfig([str(folder / "e1")])
    with pytest.raises(InvalidRequestError, match="unknown anymoe options: colour"):
        AnyMoeConfig.from_dict({"model_ids": ["x"], "dataset_json": "d.json", "colour": 1})
    with pytest.raises(InvalidRequestError, match="cannot be combined"):
        LLM(str(tiny_llama[1]), anymoe=_config(folder), enable_lora=True)
    make_adapter(tiny_llama[0], tmp_path / "attn", seed=3, targets=["q_proj", "down_proj"])
    with pytest.raises(InvalidRequestError, match="AnyMoE experts are MLPs"):
        LLM(
            str(tiny_llama[1]),
            anymoe=AnyMoeConfig([str(tmp_path / "attn")], dataset=[("a b", 1)], expert_type="lora_adapter"),
        )


def test_config_file_in_mistral_rs_form(tiny_llama, experts, tmp_path):
    """mistral.rs's TOML selector's [anymoe] table; a JSON dataset; relative paths from the file's folder."""
    folder, _ = experts
    rows = [{"prompt": p, "expert": k + 1} for k in (0, 1) for p in _prompts(k, 4, random.Random(2))]
    (tmp_path / "amoe.json").write_text(json.dumps({"rows": rows}))
    (tmp_path / "anymoe.toml").write_text(
        f'[anymoe]\ndataset_json = "amoe.json"\nprefix = "model.layers"\nmlp = "mlp"\n'
        f'model_ids = ["{folder / "e1"}", "{folder / "e2"}"]\nlayers = [1]\n\n'
        "[anymoe.config]\nhidden_size = 64\nepochs = 2\nbatch_size = 4\n\n"
        "[anymoe.config.expert_type.lora_adapter]\nrank = 4\nalpha = 8\n"
        'target_modules = ["gate_proj", "up_proj", "down_proj"]\n'
    )
    llm = LLM(str(tiny_llama[1]), dtype="float32", anymoe=str(tmp_path / "anymoe.toml"))
    mixed = [name for name, m in llm.engine.model_runner.model.named_modules() if isinstance(m, MoeMlp)]
    assert mixed == ["model.layers.1.mlp"]
    assert len(llm.generate(["apple banana"], _one_token())[0].outputs[0].token_ids) == 1


def test_serve_flag_reads_the_file(tmp_path):
    import argparse

    from mistralpy.config import EngineConfig
    from mistralpy.lora.anymoe.cli import anymoe_options
    from mistralpy.server.serve import add_serve_args

    p = argparse.ArgumentParser()
    add_serve_args(p)
    (tmp_path / "amoe.json").write_text(json.dumps({"model_ids": ["e1"], "dataset_json": "d.json", "epochs": 3}))
    args = p.parse_args(["--anymoe-config", str(tmp_path / "amoe.json")])
    config = EngineConfig(**anymoe_options(args)).anymoe
    assert (config.model_ids, config.dataset_json, config.epochs) == (
        [str(tmp_path / "e1")],
        str(tmp_path / "d.json"),
        3,
    )
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidRequestError, match="cannot read the AnyMoE config"):
        EngineConfig(anymoe=str(tmp_path / "bad.json"))
