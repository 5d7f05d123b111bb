"""The engine's GPU path run on the CPU: the Triton kernels bound through the layers' seams (kernels="triton", run by
Triton's interpreter), against transformers (float32 greedy tokens) and against the CPU's own path (bf16 logits of a
GGUF model whose weights stay in their blocks for the Triton matmuls). Small shapes: the interpreter is slow."""

from __future__ import annotations

import os

import gguf
import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU
from mistralpy import LLM, SamplingParams  # noqa: E402
from mistralpy.device import Placement  # noqa: E402
from mistralpy.engine.model_runner import ModelRunner  # noqa: E402
from mistralpy.gpu.gguf_linear import TritonGGUFLinear  # noqa: E402
from mistralpy.gpu.kernel_set import TritonKernels  # noqa: E402
from mistralpy.layers.norm import RMSNorm  # noqa: E402
from mistralpy.loader import open_model_source  # noqa: E402
from mistralpy.loader.model_loader import load_model  # noqa: E402
from mistralpy.quant.quantized_linear import FusedQuantizedLinear  # noqa: E402

from .helpers import llama_to_gguf  # noqa: E402
from .model_steps import BLOCK, bound_step, reference_greedy  # noqa: E402

Q = gguf.GGMLQuantizationType


def test_greedy_tokens_through_the_triton_seams_match_transformers(tiny_llama):
    hf_model, folder, _ = tiny_llama
    llm = LLM(str(folder), dtype="float32", kernels="triton", block_size=BLOCK)
    runner = llm.engine.model_runner
    assert runner.decode_kernel == TritonKernels.decode_attention
    assert runner.prefill_kernel == TritonKernels.prefill_attention
    prompts = [[5, 100, 2000, 31, 7, 9], [1000 + i for i in range(17)]]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    for prompt, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == reference_greedy(hf_model, prompt, 8)


def test_a_draft_model_runs_where_the_target_runs(tiny_llama):
    """Speculative decoding on the Triton path: the draft model's runner binds the same kernels as the target's (on
    CUDA: the same device), and greedy tokens stay transformers'. The draft is the target's own weights, so its
    proposals are accepted and the verify rows are the ones that produce the text."""
    hf_model, folder, _ = tiny_llama
    draft = {"model": str(folder), "num_speculative_tokens": 2, "adaptive_k": False}
    llm = LLM(str(folder), dtype="float32", kernels="triton", block_size=BLOCK, speculative_config=draft)
    draft_runner = llm.engine.speculator.draft.draft.runner
    assert draft_runner.device == llm.engine.model_runner.device
    assert draft_runner.decode_kernel == TritonKernels.decode_attention
    assert draft_runner.prefill_kernel == TritonKernels.prefill_attention
    prompt = [5, 100, 2000, 31, 7, 9]
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0]
    assert out.outputs[0].token_ids == reference_greedy(hf_model, prompt, 6)
    assert llm.engine.speculator.stats.num_accepted_tokens > 0


def _runner(path, backend: str) -> ModelRunner:
    model = load_model(open_model_source(path), torch.bfloat16, backend=backend)
    placement = Placement(torch.device("cpu"), backend)
    return ModelRunner(model, 16, BLOCK, torch.bfloat16, "auto", placement=placement)


def test_bf16_gguf_through_the_triton_seams_matches_the_cpu_path(tiny_llama, tmp_path):
    path = tmp_path / "q.gguf"
    llama_to_gguf(tiny_llama[0], path, qtypes={"attn": Q.Q8_0, "ffn": Q.Q4_0})
    triton, cpu = _runner(path, "triton"), _runner(path, "native")
    layer = triton.model.model.layers[0]
    linears = [layer.self_attn.qkv_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj]
    parts = [p for m in linears for p in (m.parts if isinstance(m, FusedQuantizedLinear) else [m])]
    assert all(isinstance(p, TritonGGUFLinear) for p in parts)  # the weights stay in their GGUF blocks
    assert all(isinstance(m.native, TritonKernels) for m in triton.model.modules() if isinstance(m, RMSNorm))
    prompt = [7, 300, 41, 5000, 12, 9, 77, 1024, 3]
    chunks = [(prompt[:5], 0), (prompt[5:], 5), ([11], 9), ([4000], 10)]  # chunked prefill, then two decodes
    for ids, start in chunks:
        got, want = bound_step(triton, ids, start), bound_step(cpu, ids, start)
        # bf16 activations: the two paths round at different places (float32 norms inside the kernels); measured
        # differences 0.08-0.12 on logits up to ~4
        torch.testing.assert_close(got, want, atol=0.05 * want.abs().max().item(), rtol=0)
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_int8_kv_rows_are_refused_on_the_triton_path(tiny_llama):
    with pytest.raises(Exception, match="kv_cache_dtype 'int8' runs on the CPU's kernels only"):
        LLM(str(tiny_llama[1]), kernels="triton", kv_cache_dtype="int8")


@pytest.mark.parametrize("act, kind", [("silu_and_mul", "silu"), ("gelu_tanh_and_mul", "gelu_tanh")])
def test_the_gated_activations_bind_the_triton_kernels(act, kind):
    from mistralpy.layers import activation

    x = torch.randn(3, 2, 64, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    gate, up = x.double().chunk(2, dim=-1)
    if kind == "silu":
        want = gate * torch.sigmoid(gate) * up
    else:  # GELU's tanh form, written out
        want = 0.5 * gate * (1 + torch.tanh(0.7978845608028654 * (gate + 0.044715 * gate**3))) * up
    got = getattr(activation, act)(x, TritonKernels())
    assert got.shape == (3, 2, 32)
    torch.testing.assert_close(got.double(), want, atol=2e-2, rtol=2e-2)
