"""With LoRA enabled, decode steps run the native DecoderStack whether or not their tokens use adapters: without an
adapter token it gives the tokens and logprobs of the model without LoRA; with adapter tokens (the native lora_add
after each projection) the same as the per-layer path bit for bit, and each row of a batch mixing adapters and no
adapter the same as that request run alone."""

from __future__ import annotations

from mistralpy import LLM, SamplingParams
from mistralpy.layers.decoder_stack import DecoderStack
from mistralpy.lora import LoRARequest
from mistralpy.quant.native_linear import native_qmatmul

from . import machine
from .lora_adapters import make_adapter

PROMPTS = [[5, 100, 2000, 31, 7, 9], list(range(300, 321)), [17, 18, 19, 4000, 21]]
PARAMS = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=3)


def _run(llm: LLM, prompts: list, adapters: list) -> list:
    outputs = llm.generate(prompts, PARAMS, use_tqdm=False, lora_request=adapters)
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in outputs]


def test_decode_steps_run_the_stack_with_and_without_adapters(family_files, tmp_path, monkeypatch):
    machine.require_native_qmatmul()
    assert native_qmatmul() is not None
    files = family_files("llama")
    make_adapter(files.reference, tmp_path / "a", seed=1)
    make_adapter(files.reference, tmp_path / "b", seed=2, r=8, targets=["q_proj", "v_proj", "down_proj"])
    a, b = LoRARequest("a", 1, str(tmp_path / "a")), LoRARequest("b", 2, str(tmp_path / "b"))
    options = dict(dtype="bfloat16", quantization="q8_0", block_size=4, enable_prefix_caching=False)
    plain = LLM(str(files.folder), **options)
    lora = LLM(str(files.folder), enable_lora=True, max_loras=2, max_lora_rank=8, **options)
    calls: list[int] = []
    call = DecoderStack.__call__
    monkeypatch.setattr(DecoderStack, "__call__", lambda self, x, *a: (calls.append(len(x)), call(self, x, *a))[1])

    expected = _run(plain, PROMPTS, [None] * 3)
    stack_steps = len(calls)
    assert stack_steps >= PARAMS.max_tokens - 1
    calls.clear()
    assert _run(lora, PROMPTS, [None] * 3) == expected and len(calls) == stack_steps  # no adapter: as without LoRA
    calls.clear()
    mixed = _run(lora, PROMPTS, [a, None, b])
    assert len(calls) == stack_steps  # the adapter tokens' decode steps ran in the stack
    assert mixed[1] == expected[1] and mixed[0] != expected[0] and mixed[2] != expected[2]
    for row, adapter in ((0, a), (2, b)):  # each row as its request alone
        assert _run(lora, [PROMPTS[row]], [adapter]) == [mixed[row]]

    model = lora.engine.model_runner.model.model
    model._stack, model._stack_checked = None, True  # the per-layer path from here on
    calls.clear()
    assert _run(lora, PROMPTS, [a, None, b]) == mixed and calls == []
