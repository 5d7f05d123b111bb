"""With LoRA enabled, decode steps in which no token uses an adapter still run the native DecoderStack (over the LoRA
layers' base weights), with the same tokens and logprobs as the model without LoRA; steps with an adapter token run
the per-layer path."""

from __future__ import annotations

from mistralpy import LLM, SamplingParams
from mistralpy.layers.decoder_stack import DecoderStack
from mistralpy.lora import LoRARequest
from mistralpy.quant.native_linear import native_qmatmul

from . import machine
from .lora_adapters import make_adapter

PROMPTS = [[5, 100, 2000, 31, 7, 9], list(range(300, 321))]
PARAMS = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=3)


def test_steps_without_adapters_keep_the_stack(family_files, tmp_path, monkeypatch):
    machine.require_native_qmatmul()
    assert native_qmatmul() is not None
    files = family_files("llama")
    make_adapter(files.reference, tmp_path / "a", seed=1)
    options = dict(dtype="bfloat16", quantization="q8_0", block_size=4, enable_prefix_caching=False)
    plain = LLM(str(files.folder), **options)
    lora = LLM(str(files.folder), enable_lora=True, max_loras=1, max_lora_rank=4, **options)
    calls: list[int] = []
    call = DecoderStack.__call__
    monkeypatch.setattr(DecoderStack, "__call__", lambda self, x, *a: (calls.append(len(x)), call(self, x, *a))[1])

    def run(llm: LLM, adapter=None) -> list:
        outputs = llm.generate(PROMPTS, PARAMS, use_tqdm=False, lora_request=adapter)
        return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in outputs]

    expected = run(plain)
    stack_steps = len(calls)
    assert stack_steps >= PARAMS.max_tokens - 1
    calls.clear()
    assert run(lora) == expected and len(calls) == stack_steps  # LoRA on, no adapter: the stack, same results
    calls.clear()
    adapted = run(lora, [LoRARequest("a", 1, str(tmp_path / "a")), None])
    assert calls == [] and adapted[1] == expected[1] and adapted[0] != expected[0]
