"""The native DecoderStack (a decode step's Llama layers in one call) against the per-layer path: the same kernels in
the same order, so greedy tokens and logprobs must be equal, not just close. Families whose layers compute something
else must not get a stack."""

from __future__ import annotations

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.quant.native_linear import NativeQuantLinear, native_qmatmul

from . import machine

PROMPTS = [[5, 100, 2000, 31, 7, 9], list(range(300, 341)), list(range(1000, 1023))]
PARAMS = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=3)


@pytest.fixture
def needs_qmatmul():
    machine.require_native_qmatmul()
    assert native_qmatmul() is not None, "this machine must run the native quantized matmul (tests/machine.py)"


def _stack_model(llm: LLM):
    return llm.engine.model_runner.model.model


def _run(llm: LLM) -> list[tuple[list[int], list]]:
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in llm.generate(PROMPTS, PARAMS)]


@pytest.mark.parametrize(
    "name, quantization, kv_cache_dtype",
    # Mistral: a sliding window; Qwen2: q/k/v biases; Phi-3: its rotary rows picked by sequence length (LongRoPE)
    [
        ("llama", "q4_0", "auto"),
        ("llama", "q8_0", "auto"),
        ("llama", "q4_0", "int8"),
        ("mistral", "q4_1", "auto"),
        ("qwen2", "q4_k", "auto"),
        ("phi3", "q8_0", "auto"),
    ],
)
def test_stack_equals_the_layer_path(needs_qmatmul, family_files, name, quantization, kv_cache_dtype):
    llm = LLM(
        str(family_files(name).folder),
        dtype="bfloat16",
        quantization=quantization,
        block_size=4,
        enable_prefix_caching=False,
        kv_cache_dtype=kv_cache_dtype,
    )
    model = _stack_model(llm)
    assert model.decode_stack() is not None
    assert all(type(layer.self_attn.qkv_proj) is NativeQuantLinear for layer in model.layers)
    with_stack = _run(llm)
    model._stack, model._stack_checked = None, True  # the per-layer path from here on
    assert _run(llm) == with_stack


def test_window_reaches_the_stack(needs_qmatmul, family_files):
    """Mistral's window of 12 changes the result on these prompts: a stack that dropped it would differ."""
    llm = LLM(
        str(family_files("mistral").folder),
        dtype="bfloat16",
        quantization="q8_0",
        block_size=4,
        enable_prefix_caching=False,
    )
    windowed = _run(llm)
    model = _stack_model(llm)
    for layer in model.layers:
        layer.self_attn.attn.sliding_window = None
    model._stack, model._stack_checked = None, False
    assert model.decode_stack() is not None
    assert _run(llm) != windowed


@pytest.mark.parametrize("name", ["gemma", "gemma2", "qwen3", "mixtral", "phi2"])
def test_other_layers_get_no_stack(needs_qmatmul, family_files, name):
    llm = LLM(str(family_files(name).gguf_q8), dtype="bfloat16")
    assert _stack_model(llm).decode_stack() is None
    assert len(llm.generate([PROMPTS[0]], PARAMS)[0].outputs[0].token_ids) == PARAMS.max_tokens


def test_no_stack_without_native_weights(tiny_llama):
    """float32 compute dequantizes the weights: the layers run in Python."""
    llm = LLM(str(tiny_llama[2]), dtype="float32")
    assert _stack_model(llm).decode_stack() is None


def test_stack_rebuilt_after_a_dtype_change(needs_qmatmul, family_files):
    llm = LLM(str(family_files("llama").gguf_q8), dtype="bfloat16")
    model = _stack_model(llm)
    first = model.decode_stack()
    assert first is not None
    model.float()  # the norms' weights are float32 now: the stack must not keep the old bf16 tensors
    assert model.decode_stack() is None
