"""LoRA adapters against PEFT (the oracle) on tiny random models in fp32: logits of a chunked prefill and decode
steps for several families, several adapters in one batch through the engine, a quantized base, the prefix cache."""

from __future__ import annotations

import gguf
import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.engine.block_hash import root_key
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.lora import LoRARequest
from mistralpy.lora.layer import LoRALinear
from mistralpy.lora.manager import LoRAManager
from mistralpy.quant.quantized_linear import QuantizedLinear

from . import machine
from .lora_adapters import make_adapter, peft_logits
from .model_steps import BLOCK, decode, prefill

PROMPT = torch.randint(3, 49152, (14,), generator=torch.Generator().manual_seed(5)).tolist()
STEPS = [11, 12, 13]
# Phi-3's checkpoints hold q/k/v and gate/up fused already: PEFT targets the fused modules there
FAMILY_TARGETS = {"phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}


def runner_with_lora(source, dtype=torch.float32, **load) -> tuple[ModelRunner, LoRAManager]:
    model = load_model(open_model_source(source), dtype, **load)
    manager = LoRAManager(model, max_loras=3, max_lora_rank=8, dtype=dtype)
    return ModelRunner(model, num_blocks=64, block_size=BLOCK, dtype=dtype, lora=manager), manager


def step_logits(runner: ModelRunner, manager: LoRAManager, slot: int) -> torch.Tensor:
    """Logits of PROMPT (two prefill chunks) and STEPS (decode steps), every token under `slot`."""
    rows = []
    with torch.inference_mode():
        split = len(PROMPT) // 2
        for start, chunk in ((0, PROMPT[:split]), (split, PROMPT[split:])):
            manager.begin_step([slot] * len(chunk))
            rows.append(prefill(runner, chunk, start))
        for i, token in enumerate(STEPS):
            manager.begin_step([slot])
            rows.append(decode(runner, token, len(PROMPT) + i).unsqueeze(0))
        manager.end_step()
    return torch.cat(rows)


@pytest.mark.parametrize("name", ["llama", "qwen2", "mistral", "phi3"])
def test_logits_match_peft(family_files, tmp_path, name):
    files = family_files(name)
    targets = FAMILY_TARGETS.get(name)
    peft_model = make_adapter(files.reference, tmp_path / "a", seed=1, r=4, alpha=8, targets=targets)
    runner, manager = runner_with_lora(files.folder)
    slot = manager.acquire(LoRARequest("a", 1, str(tmp_path / "a")), set())
    ids = PROMPT + STEPS
    expected, base = peft_logits(peft_model, ids), peft_logits(files.reference, ids)
    assert (expected - base).abs().max() > 0.5  # the adapter changes the logits: the comparison means something
    torch.testing.assert_close(step_logits(runner, manager, slot), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(step_logits(runner, manager, -1), base, atol=1e-4, rtol=0)


def test_rslora_and_some_targets(family_files, tmp_path):
    """use_rslora scales by alpha / sqrt(r); an adapter on some projections only (q and v of qkv, up of gate_up)."""
    files = family_files("llama")
    peft_model = make_adapter(
        files.reference, tmp_path / "a", seed=2, r=8, alpha=4, targets=["q_proj", "v_proj", "up_proj"], use_rslora=True
    )
    runner, manager = runner_with_lora(files.folder)
    slot = manager.acquire(LoRARequest("a", 1, str(tmp_path / "a")), set())
    torch.testing.assert_close(
        step_logits(runner, manager, slot), peft_logits(peft_model, PROMPT + STEPS), atol=1e-4, rtol=0
    )


def _logprob_rows(output) -> list[dict[int, float]]:
    return [{t: lp.logprob for t, lp in pos.items()} for pos in output.outputs[0].logprobs]


def _check_against(reference: torch.nn.Module, prompt: list[int], output) -> None:
    """Greedy tokens and their top logprobs equal the reference's (fp32 log-softmax) within 1e-4."""
    tokens = output.outputs[0].token_ids
    logits = peft_logits(reference, prompt + list(tokens))[len(prompt) - 1 : -1]
    assert tokens == logits.argmax(-1).tolist()
    expected = torch.log_softmax(logits.double(), -1)
    for row, logprobs in zip(expected, _logprob_rows(output), strict=True):
        for token, value in logprobs.items():
            assert abs(value - row[token].item()) < 1e-4


def test_many_adapters_in_one_batch(family_files, tmp_path, monkeypatch):
    """Four prompts under adapters A, B, none and A, added together: the first step runs them in one batch (three
    groups); each output equals PEFT with its adapter alone, the base one equals the base model."""
    files = family_files("qwen2")
    refs = {i: make_adapter(files.reference, tmp_path / f"a{i}", seed=10 + i, r=4 * i) for i in (1, 2)}
    reqs = {i: LoRARequest(f"a{i}", i, str(tmp_path / f"a{i}")) for i in (1, 2)}
    steps: list[list[int]] = []
    begin = LoRAManager.begin_step
    monkeypatch.setattr(LoRAManager, "begin_step", lambda self, slots: (steps.append(list(slots)), begin(self, slots)))
    llm = LLM(str(files.folder), dtype="float32", enable_lora=True, max_loras=2, max_lora_rank=8)
    prompts = [PROMPT, PROMPT[3:], PROMPT[5:], PROMPT[1:]]
    which = [1, 2, None, 1]
    params = SamplingParams(temperature=0, max_tokens=3, logprobs=4, ignore_eos=True)
    outputs = llm.generate(prompts, params, lora_request=[None if i is None else reqs[i] for i in which])
    assert len(set(steps[0])) == 3 and len(steps[0]) == sum(map(len, prompts))  # A, B and none in the first step
    for prompt, i, output in zip(prompts, which, outputs, strict=True):
        _check_against(files.reference if i is None else refs[i], prompt, output)


def test_quantized_base(family_files, tmp_path):
    """A Q8_0 GGUF base keeps its weights quantized (the adapter runs beside them, in fp32). The oracle is PEFT on
    the dequantized weights (gguf-py's quantize -> dequantize of the same HF weights). Our quantized matmul rounds
    activations to int8 per group of 32, so the tolerance is measured, not assumed: the base model's own error
    against its dequantized reference, on the same tokens, times 2 (plus 1e-4)."""
    files = family_files("llama")
    base = _dequantized_copy(files.reference, gguf.GGMLQuantizationType.Q8_0)
    peft_model = make_adapter(base, tmp_path / "a", seed=4, r=4)
    runner, manager = runner_with_lora(files.gguf_q8, weights="quantized")
    wrapped = [m for m in runner.model.modules() if isinstance(m, LoRALinear)]
    assert wrapped and all(isinstance(m.base, QuantizedLinear) for m in wrapped)
    slot = manager.acquire(LoRARequest("a", 1, str(tmp_path / "a")), set())
    ids = PROMPT + STEPS
    base_error = (step_logits(runner, manager, -1) - peft_logits(base, ids)).abs().max().item()
    lora_error = (step_logits(runner, manager, slot) - peft_logits(peft_model, ids)).abs().max().item()
    effect = (peft_logits(peft_model, ids) - peft_logits(base, ids)).abs().max().item()
    assert lora_error <= 2 * base_error + 1e-4, (lora_error, base_error)
    assert effect > 20 * (2 * base_error + 1e-4)  # the adapter's effect is far above the tolerance


def _dequantized_copy(model: torch.nn.Module, qtype) -> torch.nn.Module:
    """The model with every 2-D weight but the token embedding rounded through `qtype` (what the GGUF stores)."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if p.dim() == 2 and "embed_tokens" not in name:
                blocks = gguf.quants.quantize(p.numpy(), qtype)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(blocks, qtype)).reshape(p.shape))
    return out


def test_prefix_cache_keeps_adapters_apart(family_files, tmp_path):
    files = family_files("llama")
    refs = {i: make_adapter(files.reference, tmp_path / f"a{i}", seed=20 + i) for i in (1, 2)}
    reqs = {i: LoRARequest(f"a{i}", i, str(tmp_path / f"a{i}")) for i in (1, 2)}
    llm = LLM(str(files.folder), dtype="float32", enable_lora=True, max_loras=2, max_lora_rank=4, block_size=4)
    params = SamplingParams(temperature=0, max_tokens=2, logprobs=2, ignore_eos=True)
    # admitted in this order in one step: the blocks of the first are registered before the others look theirs up
    first, other, base = llm.generate([PROMPT] * 3, params, lora_request=[reqs[1], reqs[2], None])
    again = llm.generate([PROMPT], params, lora_request=reqs[1])[0]
    assert (first.num_cached_tokens, other.num_cached_tokens, base.num_cached_tokens) == (0, 0, 0)
    assert again.num_cached_tokens == 12  # the three full blocks of the prompt, cached under adapter 1
    _check_against(refs[2], PROMPT, other)
    _check_against(files.reference, PROMPT, base)
    _check_against(refs[1], PROMPT, again)


def test_root_key_covers_the_adapter():
    model = b"m"
    keys = {root_key(model), root_key(model, adapter=b"a"), root_key(model, adapter=b"b"), root_key(model, salt="a")}
    assert len(keys) == 4


@pytest.mark.parametrize("num_tokens", [7, 45, 90])  # the batched form (few tokens) and the segments (many)
def test_layer_rows_take_their_own_adapter(num_tokens):
    """Each row of a LoRALinear equals x W^T + x A_s^T B_s^T scale_s of its own slot s (none for -1), computed
    row by row in float64; slot 1 holds two parts at other rows of the output, slot 2 targets nothing here."""
    x, slots, layer, expected = _slotted_layer(num_tokens, torch.float32)
    torch.testing.assert_close(layer(x).double(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("num_tokens", [7, 33])
def test_layer_rows_take_their_own_adapter_native_bf16(num_tokens, native_kernels):
    """The same in bf16 with the native kernels bound: the few tokens' deltas by the native lora_add (its spans set
    from the parts), within bf16 rounding of the float64 rows."""
    machine.require_native()
    x, slots, layer, expected = _slotted_layer(num_tokens, torch.bfloat16, native_kernels)
    assert layer.runs_native(x, layer.state.step)
    torch.testing.assert_close(layer(x).double(), expected, atol=0.05, rtol=0.02)


def _slotted_layer(num_tokens: int, dtype: torch.dtype, native=None):
    from mistralpy.layers.linear import Linear
    from mistralpy.lora.layer import LoRAState, LoRAStep

    gen = torch.Generator().manual_seed(0)
    base = Linear(64, 96)
    base.weight.data = torch.randn(96, 64, generator=gen).to(dtype)
    state = LoRAState()
    layer = LoRALinear(base, max_loras=3, max_rank=8, dtype=dtype, state=state)
    layer.native = native
    parts = {0: [(0, 4, 96)], 1: [(0, 3, 40), (64, 2, 32)], 2: []}  # (first row, rank, rows)
    adapters = {s: [(row, torch.randn(r, 64, generator=gen) / 4, torch.randn(n, r, generator=gen) / 4)
                    for row, r, n in p] for s, p in parts.items()}  # fmt: skip
    for slot, ps in adapters.items():
        layer.set_slot(slot, ps)
    slots = torch.randint(-1, 3, (num_tokens,), generator=gen).tolist()
    x = torch.randn(num_tokens, 64, generator=gen).to(dtype)
    state.step = LoRAStep.from_slots(slots)
    expected = x.double() @ base.weight.double().T
    for t, s in enumerate(slots):
        for row, a, b in adapters.get(s, []):
            a, b = a.to(dtype).double(), b.to(dtype).double()  # the slots hold them in the compute dtype
            expected[t, row : row + b.shape[0]] += b @ (a @ x[t].double())
    return x, slots, layer, expected
