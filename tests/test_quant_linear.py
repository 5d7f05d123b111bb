"""QuantizedLinear for every GGUF type: exact dequantization, matmul against the dequantized float32 reference,
fused parts of mixed types, embedding rows.

Tolerances (elementwise, scaled by s = |x| @ |W|^T, the sum of the magnitudes of the products):
- bfloat16 activations: |y - x W^T| <= 2**-8 * s. Observed: <= 1.4e-3 * s, and <= 1.4e-3 * s for the dense bf16
  path, which rounds x, W and y to 8 significant bits (2**-9 relative); torch's int4 kernel rounds each group's scale
  and zero instead of each weight, and accumulates in float32; the native kernel keeps the exact weights and rounds
  only x and y.
Types with groups of 32 run on both the native kernel (where it is built) and torch's int4 kernel.
- float32 activations: |y - x W^T| <= 1e-5 * s (exact weights; float32 summation order only) where the kernel computes
  in float32; the quantized kernels round x as they do for bf16 (the native one to int8 per group, torch's int4 one
  to bf16): the bf16 bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import quants
from gguf.constants import GGMLQuantizationType

from mistralpy.engine.model_runner import ModelRunner
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.quant import factory, int4_linear, int4pack
from mistralpy.quant.factory import linear_from_gguf
from mistralpy.quant.gguf_dequant import SUPPORTED_TYPES
from mistralpy.quant.int4_linear import DENSE_MIN_ROWS, INT4_TYPES, Int4PackLinear
from mistralpy.quant.native_linear import (
    NativeQuantLinear,
    native_qmatmul,
)
from mistralpy.quant.quantized_embedding import QuantizedEmbedding
from mistralpy.quant.quantized_linear import FusedQuantizedLinear, GGUFLinear, QuantizedLinear

from . import machine
from .helpers import group32_linear_cls, llama_to_gguf, make_tiny_llama, quantized_linear_cls, random_blocks

Q = GGMLQuantizationType
QUANTIZED = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
ROWS, COLS = 96, 512  # 96 rows: not a multiple of the kernel's 64-row blocks, so padding is exercised
BF16_TOL, F32_TOL = 2**-8, 1e-5


def f32_tol(layer: QuantizedLinear) -> float:
    """The float32 bound of a layer: exact float32 arithmetic, or its kernel's rounding of x (the bf16 bound)."""
    parts = layer.parts if isinstance(layer, FusedQuantizedLinear) else [layer]
    rounds_x = any(isinstance(p, (NativeQuantLinear, Int4PackLinear)) for p in parts)
    return BF16_TOL if rounds_x else F32_TOL


def reference(raw: np.ndarray, qtype: GGMLQuantizationType) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(quants.dequantize(raw, qtype), dtype=np.float32))


def assert_matmul_close(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, tol: float) -> None:
    exact = x.double() @ w.double().t()
    scale = x.double().abs() @ w.double().abs().t()
    err = (y.double() - exact).abs()
    assert y.dtype == x.dtype and y.shape == exact.shape
    assert (err <= tol * scale + 1e-30).all(), f"max err/scale {(err / scale).max().item():.3g} > {tol:.3g}"


CASES = [(t, "factory") for t in sorted(SUPPORTED_TYPES, key=int)] + [(t, "int4pack") for t in sorted(INT4_TYPES)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0].name}-{c[1]}")
def case(request):
    qtype, kind = request.param
    raw = random_blocks(qtype, ROWS, COLS, seed=int(qtype))
    blocks = torch.from_numpy(raw)
    if kind == "int4pack":  # torch's int4 kernel: what the factory picks where the native kernel is not built
        layer = Int4PackLinear.from_gguf_blocks(blocks, qtype, (ROWS, COLS), None)
    else:
        layer = linear_from_gguf(blocks, qtype, (ROWS, COLS))
        assert type(layer) is quantized_linear_cls(qtype)
    return qtype, raw, reference(raw, qtype), layer


def test_every_type_has_a_kernel_and_dequantizes_exactly(case) -> None:
    qtype, raw, ref, layer = case
    assert (layer.in_features, layer.out_features, layer.qtype) == (COLS, ROWS, qtype)
    assert torch.equal(layer.dequantize(), ref)
    ids = torch.tensor([95, 0, 64, 63, 7, 7, 33])
    assert torch.equal(layer.dequantize_rows(ids), ref[ids])
    assert torch.equal(GGUFLinear(torch.from_numpy(raw), qtype, (ROWS, COLS), None).dequantize(), ref)


@pytest.mark.parametrize("batch", [1, 7, 13, 64, 2 * DENSE_MIN_ROWS + 1])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_matmul_matches_dequantized_reference(case, batch: int, dtype: torch.dtype) -> None:
    _, _, ref, layer = case
    x = torch.randn(batch, COLS, generator=torch.Generator().manual_seed(batch)).to(dtype)
    with torch.inference_mode():
        y = layer(x)
    assert_matmul_close(y, x, ref, BF16_TOL if dtype == torch.bfloat16 else f32_tol(layer))


def test_leading_dims_and_bias() -> None:
    raw = torch.from_numpy(random_blocks(Q.Q4_1, 64, 256))
    bias = torch.randn(64).bfloat16()
    layer = linear_from_gguf(raw, Q.Q4_1, (64, 256), bias)
    x = torch.randn(2, 3, 256).bfloat16()
    with torch.inference_mode():
        y = layer(x)
    assert y.shape == (2, 3, 64)
    assert_matmul_close((y - bias).view(6, 64), x.view(6, 256), layer.dequantize(), 2 * BF16_TOL)


def test_fused_parts_of_mixed_types() -> None:
    # A Q4_K_M-style attention projection: q and k in Q4_K, v in Q6_K, concatenated along the outputs.
    shapes = [(Q.Q4_K, 128), (Q.Q4_K, 64), (Q.Q6_K, 64)]
    parts = [torch.from_numpy(random_blocks(t, n, COLS, seed=i)) for i, (t, n) in enumerate(shapes)]
    layers = [linear_from_gguf(p, t, (n, COLS)) for p, (t, n) in zip(parts, shapes, strict=True)]
    fused = FusedQuantizedLinear(layers)
    ref = torch.cat([reference(p.numpy(), t) for p, (t, _) in zip(parts, shapes, strict=True)])
    assert fused.qtypes == [Q.Q4_K, Q.Q4_K, Q.Q6_K] and fused.out_features == 256
    assert torch.equal(fused.dequantize(), ref)
    for dtype, tol in ((torch.bfloat16, BF16_TOL), (torch.float32, f32_tol(fused))):
        x = torch.randn(5, COLS).to(dtype)
        with torch.inference_mode():
            assert_matmul_close(fused(x), x, ref, tol)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_1, Q.Q6_K], ids=lambda t: t.name)
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "lookup-only"])
def test_quantized_embedding_rows(qtype: GGMLQuantizationType, tied: bool) -> None:
    vocab, hidden = 200, 256
    raw = torch.from_numpy(random_blocks(qtype, vocab, hidden))
    ref = reference(raw.numpy(), qtype)
    shape = (vocab, hidden)
    table = linear_from_gguf(raw, qtype, shape) if tied else GGUFLinear(raw, qtype, shape, None)
    emb = QuantizedEmbedding(table, torch.bfloat16)
    ids = torch.tensor([[5, 199, 5], [0, 64, 130]])
    rows = emb(ids)
    assert rows.dtype == torch.bfloat16 and rows.shape == (2, 3, hidden)
    assert torch.equal(rows, ref[ids].bfloat16())  # exactly what a dense bf16 nn.Embedding holds
    if tied:
        h = torch.randn(3, hidden).bfloat16()
        with torch.inference_mode():
            logits = emb.logits(h)  # float32 whatever the kernel: the sampler's dtype
            assert_matmul_close(logits, h.float(), ref, BF16_TOL)


def test_int4_memory_is_a_fraction_of_bf16() -> None:
    raw = torch.from_numpy(random_blocks(Q.Q4_1, 576, 1536))
    # torch's kernel: 4-bit codes, bf16 kernel scale/zero and exact f16 d/m per group of 32: 6 bits per weight
    assert Int4PackLinear.from_gguf_blocks(raw, Q.Q4_1, (576, 1536), None).nbytes == 576 * 1536 * 6 // 8
    # the native kernel: 4-bit codes and the f16 d/m themselves: 5 bits per weight, as in the file (vs 16 for bf16)
    if machine.NATIVE_QMATMUL:
        native = native_qmatmul()
        assert native is not None, "this machine must run the native quantized matmul (tests/machine.py)"
        assert NativeQuantLinear.from_gguf_blocks(raw, Q.Q4_1, (576, 1536), None, native).nbytes == 576 * 1536 * 5 // 8


def test_packing_in_slices_of_rows(monkeypatch) -> None:
    monkeypatch.setattr(int4_linear, "_PACK_ROWS", 64)  # 150 rows: two full slices and a padded one
    raw = random_blocks(Q.Q8_0, 150, 128)
    layer = Int4PackLinear.from_gguf_blocks(torch.from_numpy(raw), Q.Q8_0, (150, 128), None)
    assert torch.equal(layer.dequantize(), reference(raw, Q.Q8_0))
    x = torch.randn(3, 128).bfloat16()
    with torch.inference_mode():
        assert_matmul_close(layer(x), x, reference(raw, Q.Q8_0), BF16_TOL)


def test_unknown_packing_layout_falls_back_to_the_kernel(monkeypatch) -> None:
    codes = torch.randint(0, 16, (128, 96), dtype=torch.uint8)
    packed = int4pack.pack_codes(codes)
    monkeypatch.setattr(int4pack, "_detected_layout", lambda: None)
    assert torch.equal(int4pack.unpack_codes(packed, 128, 96), codes)
    assert torch.equal(int4pack.unpack_rows(packed, 128, 96, torch.tensor([3, 70])), codes[[3, 70]])


# --- GGUF files with quantized tensors, loaded end to end -----------------------------------------------------------
MIXED = {  # first matching fragment wins
    "attn_q": Q.Q4_0, "attn_k": Q.Q4_0, "attn_v": Q.Q8_0,  # fused qkv of two types
    "attn_output": Q.Q4_1, "ffn_gate": Q.Q5_1, "ffn_up": Q.Q5_1, "ffn_down": Q.Q5_0,
    "output.weight": Q.Q8_0, "token_embd": Q.Q4_1,
}  # fmt: skip


def _logits(path, dtype: torch.dtype, weights: str, ids: list[int]):
    model = load_model(open_model_source(path), dtype, weights=weights)
    runner = ModelRunner(model, num_blocks=16, block_size=4, dtype=dtype)
    n = len(ids)
    meta = AttentionMetadata(torch.arange(n), 0, prefills=[PrefillSpan(n, n, torch.arange(-(-n // 4)))])
    with torch.inference_mode():
        return model.compute_logits(model(torch.tensor(ids), torch.arange(n), runner.kv_caches, meta)).float(), model


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_quantized_gguf_loads_quantized_and_matches_the_dequantized_path(tmp_path, tokenizer_dir, tie: bool) -> None:
    hf_model = make_tiny_llama(tmp_path / "hf", tie=tie)
    path = tmp_path / "mixed.gguf"
    llama_to_gguf(hf_model, path, qtypes=MIXED if not tie else {**MIXED, "token_embd": Q.Q8_0})
    ids = list(range(300, 340))
    exact, _ = _logits(path, torch.float32, "dequantized", ids)
    dense, _ = _logits(path, torch.bfloat16, "dequantized", ids)
    fast, model = _logits(path, torch.bfloat16, "auto", ids)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert isinstance(attn.qkv_proj, FusedQuantizedLinear) and attn.qkv_proj.qtypes == [Q.Q4_0, Q.Q8_0]
    kernel_cls = group32_linear_cls()
    assert isinstance(mlp.gate_up_proj, kernel_cls) and mlp.gate_up_proj.qtype == Q.Q5_1
    assert isinstance(model.model.embed_tokens, QuantizedEmbedding)
    table = model.model.embed_tokens.table
    assert isinstance(table, kernel_cls if tie else GGUFLinear)  # tied: also the output projection
    assert model.lm_head is None if tie else isinstance(model.lm_head, kernel_cls)
    dense_err, fast_err = (dense - exact).abs(), (fast - exact).abs()
    # The native kernel quantizes activations per group of 32 to int8 (as llama.cpp does): on this random model its
    # logits are ~1.8x as far from float32 as dense bf16 weights' are (max and mean, measured 2026-11-24).
    tol = 2.5 if kernel_cls is NativeQuantLinear else 1.5
    assert fast_err.max() <= tol * dense_err.max() and fast_err.mean() <= tol * dense_err.mean()
    # float32 activations on the same kernels (the avx2 and portable levels' dtype): x rounded as for bf16, the
    # rest in float32, so no farther from float32 than the bf16 path
    quantized32, model32 = _logits(path, torch.float32, "auto", ids)
    assert isinstance(model32.model.layers[0].mlp.gate_up_proj, kernel_cls)  # "auto" keeps them quantized
    err32 = (quantized32 - exact).abs()
    assert err32.max() <= fast_err.max() * 1.1 and err32.mean() <= fast_err.mean() * 1.1


def test_without_native_kernels_float32_keeps_the_weights_quantized(tmp_path, monkeypatch) -> None:
    """No compiler (or MISTRALPY_NATIVE=0) on a CPU whose compute dtype is float32: the torch paths run and the
    group-32 weights stay quantized on torch's int4 kernel, never dense float32; as near float32 as the bf16 path."""
    monkeypatch.setattr(factory, "native_qmatmul", lambda: None)
    hf_model = make_tiny_llama(tmp_path / "hf")
    path = tmp_path / "mixed.gguf"
    llama_to_gguf(hf_model, path, qtypes=MIXED)
    ids = list(range(300, 340))
    exact, _ = _logits(path, torch.float32, "dequantized", ids)
    dense, _ = _logits(path, torch.bfloat16, "dequantized", ids)
    quantized32, model = _logits(path, torch.float32, "auto", ids)
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear) and not isinstance(m, FusedQuantizedLinear)]
    assert model.model.embed_tokens.table in linears and type(model.model.embed_tokens.table) is GGUFLinear  # lookups
    assert len(linears) >= 4 and all(
        type(m) is Int4PackLinear for m in linears if m is not model.model.embed_tokens.table
    )
    dense_err, err32 = (dense - exact).abs(), (quantized32 - exact).abs()
    assert err32.max() <= 1.5 * dense_err.max() and err32.mean() <= 1.5 * dense_err.mean()


K_QUANTS = {  # a mix like llama.cpp's Q3_K_M / Q4_K_M files: 16-weight and 32-weight groups, fused qkv of two types
    "attn_q": Q.Q4_K, "attn_k": Q.Q4_K, "attn_v": Q.Q6_K, "attn_output": Q.Q3_K,
    "ffn_gate": Q.Q2_K, "ffn_up": Q.Q2_K, "ffn_down": Q.Q6_K, "token_embd": Q.Q6_K,
}  # fmt: skip
ALL_Q6_K = {frag: Q.Q6_K for frag in ("attn_", "ffn_", "token_embd")}  # one type: one kernel call per projection


@pytest.mark.parametrize("qtypes", [K_QUANTS, ALL_Q6_K], ids=["k-quant-mix", "q6_k"])
def test_k_quants_run_on_the_native_kernel_through_the_engine(tmp_path, tokenizer_dir, qtypes) -> None:
    """Q2_K, Q3_K and Q6_K (16-weight scales) stay as their codes on the native kernel: their logits are as close to
    float32 as the group-32 types' are, and greedy decoding equals the kernel's torch spelling token for token."""
    machine.require_native_qmatmul()
    assert native_qmatmul() is not None, "this machine must run the native quantized matmul (tests/machine.py)"
    from mistralpy import LLM, SamplingParams
    from mistralpy.quant.native_linear import use_kernel_reference

    hf_model = make_tiny_llama(tmp_path / "hf", tie=True, hidden_size=256, intermediate_size=512)
    path = tmp_path / "kquants.gguf"
    llama_to_gguf(hf_model, path, qtypes=qtypes, random_blocks_for=set(qtypes.values()))  # gguf-py: no K-quantizers
    ids = list(range(300, 340))
    exact, _ = _logits(path, torch.float32, "dequantized", ids)
    dense, _ = _logits(path, torch.bfloat16, "dequantized", ids)
    fast, model = _logits(path, torch.bfloat16, "auto", ids)
    layer = model.model.layers[0]
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear) and not isinstance(m, FusedQuantizedLinear)]
    assert linears and all(type(m) is NativeQuantLinear for m in linears)
    assert {m.qtype for m in linears} == set(qtypes.values())
    assert layer.mlp.down_proj.group == 16 and layer.mlp.down_proj.nbytes < 256 * 512 * 2 * 0.7  # 10 of 16 bits
    dense_err, fast_err = (dense - exact).abs(), (fast - exact).abs()
    assert fast_err.max() <= 2.5 * dense_err.max() and fast_err.mean() <= 2.5 * dense_err.mean()
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = [[5, 100, 2000, 31, 7, 9], list(range(300, 341)), [42] * 20]
    fast_llm, reference = LLM(str(path), dtype="bfloat16"), LLM(str(path), dtype="bfloat16")
    use_kernel_reference(reference.engine.model_runner.model)
    outs = [[o.outputs[0].token_ids for o in e.generate(prompts, params)] for e in (fast_llm, reference)]
    assert outs[0] == outs[1]
    assert fast_llm.engine.model_runner.model.model.decode_stack() is not None  # fused parts of two types too
