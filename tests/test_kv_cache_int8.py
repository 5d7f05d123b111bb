"""The int8 KV cache (kv_cache_dtype="int8"): its row format, the native writes and attention kernels on it against
the torch paths, attention (each path) and an engine's logits on it against float64 references within what int8
rounding allows (tests/int8_rounding.py), and its quality on the embedded model."""

from __future__ import annotations

import copy

import pytest
import torch

from mistralpy import LLM
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.errors import InvalidRequestError
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan, paged_attention
from mistralpy.layers.kv_cache import dequantize_rows, gather, quantize_rows, write_kv
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model

from . import machine
from .int8_rounding import SAMPLES, Z, decode_rows, expected_with_tolerance, noisy_attention
from .model_steps import BLOCK
from .test_isq_quality import perplexity


@pytest.fixture
def native(native_kernels):
    machine.require_native()
    return native_kernels


def _rows(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_rows_round_trip_within_half_a_step():
    x = _rows(5, 3, 64)
    x[1, 2] = 0  # an all-zero row: scale 0, codes 0
    rows = quantize_rows(x)
    assert rows.dtype == torch.uint8 and rows.shape == (5, 3, 68)
    scale = x.abs().amax(-1, keepdim=True) / 127
    back = dequantize_rows(rows, torch.float32)
    assert torch.all((back - x).abs() <= scale / 2 + 1e-6)
    assert torch.equal(back[1, 2], torch.zeros(64))
    assert rows[..., :64].view(torch.int8).abs().max() == 127  # each row's largest value takes the full range


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_native_writes_the_same_bytes_as_torch(native, dtype):
    k, v = _rows(7, 3, 64, seed=1).to(dtype), _rows(7, 3, 64, seed=2).to(dtype)
    k[3, 0] = 0
    slots = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:7]
    by_native, by_torch = (torch.zeros(2, 10, 4, 3, 68, dtype=torch.uint8) for _ in range(2))
    write_kv(by_native, k, v, slots, native.write_kv)
    write_kv(by_torch, k, v, slots, None)
    assert torch.equal(by_native, by_torch)
    cached_k, _ = gather(by_torch, torch.arange(10), torch.float32)  # (H, 40, D)
    torch.testing.assert_close(cached_k.transpose(0, 1)[slots], k.float(), atol=0.05, rtol=0)


def test_native_write_rejects_a_mismatched_cache(native):
    cache = torch.zeros(2, 4, 4, 3, 68, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="do not match the cache"):
        native.write_kv(cache, torch.zeros(2, 3, 32), torch.zeros(2, 3, 32), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="slot out of range"):
        native.write_kv(cache, torch.zeros(1, 3, 64), torch.zeros(1, 3, 64), torch.tensor([16]))


def _quantize_q(q: torch.Tensor) -> torch.Tensor:
    """q rounded per row to int8 codes times the row's scale, as the kernels round it (kernels/attention_scores.h, in
    float32 like the cache's rows): scale = max|q| / 127, code = round-half-even(q * (1 / scale)). bf16 queries often
    fall on a half step exactly, so the float32 spelling matters."""
    q = q.float()
    scale = q.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(scale > 0, 1 / scale, 0.0)
    return (torch.round((q * inv).clamp(-127, 127)) * scale).double()


def _reference(q, k, v, scale: float, window: int | None, softcap: float | None) -> torch.Tensor:
    """float64 attention of query rows q (n, H, D) at the last n of k, v's (ctx, H, D) positions."""
    n, ctx = q.shape[0], k.shape[0]
    scores = torch.einsum("nhd,khd->hnk", q, k) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    pos, key = torch.arange(ctx - n, ctx).unsqueeze(1), torch.arange(ctx).unsqueeze(0)
    mask = (key <= pos) & ((key > pos - window) if window else True)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("hnk,khd->nhd", weights, v)


def _q_rounding_bound(q, k, v, scale: float) -> torch.Tensor:
    """How far q's int8 rounding (half a step, max|q_row| / 254, per value) can move each output, to first order:
    a score moves by at most scale * step / 2 * sum|k|, the weights by twice that in l1, the output by that times
    max|v|."""
    half_step = q.abs().amax(-1, keepdim=True) / 254  # (n, H, 1)
    score_move = scale * half_step * k.abs().sum(-1).amax(0).unsqueeze(-1)  # (n, H, 1)
    return 2 * score_move * v.abs().amax((0, 2)).unsqueeze(-1) * 1.05 + 1e-6


@pytest.mark.parametrize("qdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window, softcap", [(None, None), (5, None), (7, 20.0)])
@pytest.mark.parametrize("head_dim", [64, 24, 80])  # 80: 32-dim vectors, then a rest
@pytest.mark.parametrize("kind", ["decode", "prefill"])
def test_kernels_on_an_int8_cache(native, qdtype, window, softcap, head_dim, kind):
    """Against float64 attention over the cache's values: with q rounded to int8 as the kernels round it, to float32
    or bf16 precision; with q itself, within the bound that rounding implies."""
    gen = torch.Generator().manual_seed(0)
    ctx, n = 23, (1 if kind == "decode" else 9)
    kv = quantize_rows(_rows(2, 8, 4, 2, head_dim))
    table = torch.randperm(8, generator=gen)[:6]
    q = torch.randn(n, 6, head_dim, generator=gen).to(qdtype)
    if kind == "decode":
        meta = AttentionMetadata(torch.zeros(1, dtype=torch.long), 1, table.unsqueeze(0), torch.tensor([ctx]))
        meta.decode_kernel = native.decode_attention
    else:
        meta = AttentionMetadata(torch.zeros(n, dtype=torch.long), prefills=[PrefillSpan(n, ctx, table)])
        meta.prefill_kernel = native.prefill_attention
    got = paged_attention(q, kv, meta, 0.3, window, softcap).double()
    values = dequantize_rows(kv, torch.float64)[:, table].flatten(1, 2)[:, :ctx].repeat_interleave(3, 2)
    k, v = values[0], values[1]
    exact = _reference(_quantize_q(q), k, v, 0.3, window, softcap)
    rtol = 1e-5 if qdtype == torch.float32 else 8e-3  # bf16: the output's rounding
    torch.testing.assert_close(got, exact, atol=1e-5, rtol=rtol)
    unrounded = _reference(q.double(), k, v, 0.3, window, softcap)
    assert torch.all((got - unrounded).abs() <= _q_rounding_bound(q.double(), k, v, 0.3) + rtol * unrounded.abs())


def _int8_cache(blocks: int, block_size: int, kv_heads: int, head_dim: int, seed: int) -> torch.Tensor:
    """Unit-variance K/V rows whose magnitudes (so int8 steps) vary from row to row, as int8 cache rows."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(2, blocks, block_size, kv_heads, head_dim, generator=gen)
    return quantize_rows(rows * torch.empty(*rows.shape[:-1], 1).uniform_(0.3, 2.0, generator=gen))


@pytest.fixture(params=["torch", "native"])
def kernels_or_none(request, native_kernels):
    if request.param == "native":
        machine.require_native()
    return native_kernels if request.param == "native" else None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window, softcap", [(None, None), (5, None), (7, 20.0)])
def test_decode_attention_on_an_int8_cache_within_its_rounding(kernels_or_none, dtype, window, softcap):
    gen = torch.Generator().manual_seed(1)
    kv = _int8_cache(40, 4, 2, 64, seed=1)
    lens = torch.tensor([7, 13, 1, 20, 4])
    tables = torch.stack([torch.randperm(40, generator=gen)[:5] for _ in lens])
    q = torch.randn(len(lens), 6, 64, generator=gen).to(dtype)
    meta = AttentionMetadata(torch.zeros(len(lens), dtype=torch.long), len(lens), tables, lens)
    meta.decode_kernel = None if kernels_or_none is None else kernels_or_none.decode_attention
    got = paged_attention(q, kv, meta, 0.15, window, softcap)
    assert got.dtype == dtype
    for i, n in enumerate(lens.tolist()):
        rows = decode_rows(kv[:, tables[i]].flatten(1, 2)[:, :n])  # (2, n, Hkv, D)
        pos = torch.arange(n)
        visible = (pos >= n - window if window else pos >= 0).unsqueeze(0)
        expected, tol = expected_with_tolerance(q[i : i + 1], *rows, visible, 0.15, softcap, dtype == torch.bfloat16)
        error = (got[i : i + 1].double() - expected).abs()
        assert torch.all(error <= tol), f"query {i}: {(error / tol).max():.2f} x the tolerance"


@pytest.mark.parametrize("n, ctx", [(37, 37), (20, 53)])  # a prompt; a chunk after 33 cached positions
@pytest.mark.parametrize("window, softcap", [(None, None), (12, 30.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_attention_on_an_int8_cache_within_its_rounding(kernels_or_none, n, ctx, window, softcap, dtype):
    kernel = None if kernels_or_none is None else kernels_or_none.prefill_attention
    gen = torch.Generator().manual_seed(2)
    kv = _int8_cache(9, 16, 3, 64, seed=2)
    span = PrefillSpan(n, ctx, torch.randperm(9, generator=gen)[: -(-ctx // 16)])
    q = torch.randn(n, 9, 64, generator=gen).to(dtype)
    meta = AttentionMetadata(torch.zeros(n, dtype=torch.long), prefills=[span], prefill_kernel=kernel)
    got = paged_attention(q, kv, meta, 0.15, window, softcap)
    rows = decode_rows(kv[:, span.block_table].flatten(1, 2)[:, :ctx])
    q_pos, k_pos = torch.arange(ctx - n, ctx).unsqueeze(1), torch.arange(ctx).unsqueeze(0)
    visible = (k_pos <= q_pos) & (k_pos > q_pos - window if window else True)
    expected, tol = expected_with_tolerance(q, *rows, visible, 0.15, softcap, dtype == torch.bfloat16)
    error = (got.double() - expected).abs()
    assert torch.all(error <= tol), f"{(error / tol).max():.2f} x the tolerance"


@pytest.fixture(scope="module")
def reference_logits(tiny_llama) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(prompt, transformers' float64 logits for it, how far int8 rounding of q, K and V in every layer can move them:
    Z deviations measured over SAMPLES sets of half-step errors, carried through the later layers)."""
    from transformers import AttentionInterface

    AttentionInterface.register("mistralpy_int8_rounding", noisy_attention)
    model = copy.deepcopy(tiny_llama[0]).double()
    model.set_attn_implementation("mistralpy_int8_rounding")
    ids = torch.randint(0, model.config.vocab_size, (25,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        exact = model(torch.tensor([ids])).logits[0]
        gen, squares = torch.Generator().manual_seed(0), torch.zeros_like(exact)
        for _ in range(SAMPLES // 16):
            squares += (model(torch.tensor([ids] * 16), gen=gen).logits - exact).pow(2).sum(0)
    return ids, exact, Z * (squares / SAMPLES).sqrt() + 1e-4  # 1e-4: float32 arithmetic, as in test_llama_parity


def _engine_logits(runner: ModelRunner, ids: list[int], chunks: list[int], native: bool) -> torch.Tensor:
    """Logits of prefill chunks of these lengths, then one decode step per remaining token, on runner's cache."""
    kernels = dict(write_kernel=runner.write_kernel, prefill_kernel=runner.prefill_kernel) if native else {}
    out, start = [], 0
    for n in chunks:
        table = torch.arange(-(-(start + n) // BLOCK))
        meta = AttentionMetadata(torch.arange(start, start + n), prefills=[PrefillSpan(n, start + n, table)], **kernels)
        out.append(
            runner.model(torch.tensor(ids[start : start + n]), torch.arange(start, start + n), runner.kv_caches, meta)
        )
        start += n
    for pos in range(start, len(ids)):
        meta = AttentionMetadata(
            torch.tensor([pos]), 1, torch.arange(pos // BLOCK + 1)[None], torch.tensor([pos + 1]), **kernels
        )
        meta.decode_kernel = runner.decode_kernel if native else None
        out.append(runner.model(torch.tensor(ids[pos : pos + 1]), torch.tensor([pos]), runner.kv_caches, meta))
    return runner.model.compute_logits(torch.cat(out)).double()


def test_engine_logits_on_an_int8_cache_within_its_rounding(tiny_llama, reference_logits, kernels_or_none):
    """Chunked prefill then decode on an int8 cache, float32 weights: logits against transformers in float64, within
    what int8 rounding of q, K and V in every layer can move them (its errors carried through the later layers)."""
    model = load_model(open_model_source(tiny_llama[1]), torch.float32)
    runner = ModelRunner(model, num_blocks=16, block_size=BLOCK, dtype=torch.float32, kv_cache_dtype="int8")
    plain = ModelRunner(model, num_blocks=16, block_size=BLOCK, dtype=torch.float32)
    head_dim = model.config.head_dim
    if kernels_or_none is not None:
        assert None not in (runner.write_kernel, runner.decode_kernel)
    # a row of D float32 values (4 D bytes) becomes D codes and a 4-byte scale
    assert runner.kv_cache.dtype == torch.uint8
    assert runner.kv_cache.nbytes * 4 * head_dim == plain.kv_cache.nbytes * (head_dim + 4)
    ids, expected, tol = reference_logits
    with torch.inference_mode():
        got = _engine_logits(runner, ids, [13, 9], native=kernels_or_none is not None)
    error = (got - expected).abs()
    assert torch.all(error <= tol), f"{(error / tol).max():.2f} x the tolerance"


def test_default_cache_dtype_follows_the_weights(tiny_llama):
    """Unset, the cache is int8 for quantized weights in any compute dtype (bf16: the fast path; float32: the portable
    level's) and the compute dtype for full-precision weights; "auto" always keeps the compute dtype."""
    folder = str(tiny_llama[1])
    cases = [
        ({"dtype": "bfloat16", "quantization": "q4_0"}, "int8", torch.uint8),
        ({"dtype": "bfloat16", "quantization": "q4_0", "kv_cache_dtype": "auto"}, "auto", torch.bfloat16),
        ({"dtype": "bfloat16"}, "auto", torch.bfloat16),
        ({"dtype": "float32", "quantization": "q4_0"}, "int8", torch.uint8),
        ({"dtype": "float32", "quantization": "q4_0", "kv_cache_dtype": "auto"}, "auto", torch.float32),
        ({"dtype": "float32"}, "auto", torch.float32),
    ]
    for kwargs, name, storage in cases:
        engine = LLM(folder, **kwargs).engine
        assert (engine.kv_cache_dtype, engine.model_runner.kv_cache.dtype) == (name, storage), kwargs


def test_unknown_kv_cache_dtype_is_a_clear_error(tiny_llama):
    with pytest.raises(InvalidRequestError, match="kv_cache_dtype 'fp8'.*auto, int8"):
        LLM(str(tiny_llama[2]), kv_cache_dtype="fp8")


@pytest.mark.slow
def test_int8_cache_perplexity_on_the_embedded_model():
    """Perplexity of the embedded model on test_isq_quality's text (its prompt's K/V are read back from the cache by
    the prefill itself), the fast path's: 8.678 with the int8 cache against 8.631 with bf16 K/V (2026-11-24, float32
    logits), a ratio of 1.0055; float32 throughout: 8.676. On 2449 tokens of Python's LICENSE: 6.971 against 6.988."""
    int8, bf16 = (LLM(dtype="bfloat16", kv_cache_dtype=name) for name in ("int8", "auto"))
    ratio = perplexity(int8) / perplexity(bf16)
    assert abs(ratio - 1) <= 0.01, ratio
