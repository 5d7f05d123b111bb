"""The int8 KV cache (kv_cache_dtype="int8"): its row format, the native writes and attention kernels on it against
the torch paths, engines using it, and its quality on the embedded model."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan, paged_attention
from mistralpy.layers.kv_cache import dequantize_rows, gather, quantize_rows, write_kv

from . import machine
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


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.bfloat16, 8e-3)])  # bf16: its output rounding
@pytest.mark.parametrize("window, softcap", [(None, None), (5, None), (7, 20.0)])
@pytest.mark.parametrize("head_dim", [64, 24])  # 16 lanes at a time; 24: the generic loop
def test_decode_kernel_on_an_int8_cache(native, dtype, rtol, window, softcap, head_dim):
    gen = torch.Generator().manual_seed(0)
    kv = quantize_rows(_rows(2, 40, 4, 2, head_dim))
    lens = torch.tensor([7, 13, 1, 20, 4])
    tables = torch.stack([torch.randperm(40, generator=gen)[:5] for _ in lens])
    q = torch.randn(len(lens), 6, head_dim, generator=gen).to(dtype)
    meta = AttentionMetadata(torch.zeros(len(lens), dtype=torch.long), len(lens), tables, lens)
    expected = paged_attention(q.float(), kv, meta, 0.3, window, softcap)  # torch: float32 gather + SDPA
    meta.decode_kernel = native.decode_attention
    got = paged_attention(q, kv, meta, 0.3, window, softcap)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=rtol)


@pytest.mark.parametrize("n, ctx", [(37, 37), (20, 53)])  # a prompt; a chunk after 33 cached positions
def test_prefill_kernel_on_an_int8_cache(native, n, ctx):
    machine.require_native_prefill_attention()
    assert native.has_prefill_attention()
    gen = torch.Generator().manual_seed(0)
    kv = quantize_rows(_rows(2, 9, 16, 3, 64) / 3)  # unit variance, as in test_native_prefill_attention
    span = PrefillSpan(n, ctx, torch.randperm(9, generator=gen)[: -(-ctx // 16)])
    q = torch.randn(n, 9, 64, generator=gen).to(torch.bfloat16)

    def attend(q, kernel):
        meta = AttentionMetadata(torch.zeros(n, dtype=torch.long), prefills=[span], prefill_kernel=kernel)
        return paged_attention(q, kv, meta, 0.2, None, None)

    expected = attend(q.float(), None)  # float32 over the dequantized rows
    torch.testing.assert_close(attend(q, native.prefill_attention).float(), expected, atol=2e-2, rtol=0)


def test_engines_on_an_int8_cache(tiny_llama):
    prompts = [[5, 100, 2000, 31, 7, 9], list(range(300, 341))]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    int8 = LLM(str(tiny_llama[2]), dtype="float32", block_size=4, kv_cache_dtype="int8")
    plain = LLM(str(tiny_llama[2]), dtype="float32", block_size=4)
    runner = int8.engine.model_runner
    assert runner.kv_cache.dtype == torch.uint8
    head_dim = tiny_llama[0].config.hidden_size // tiny_llama[0].config.num_attention_heads
    # a row of D float32 values (4 D bytes) becomes D codes and a 4-byte scale
    assert runner.kv_cache.nbytes * 4 * head_dim == plain.engine.model_runner.kv_cache.nbytes * (head_dim + 4)
    torch_paths = LLM(str(tiny_llama[2]), dtype="float32", block_size=4, kv_cache_dtype="int8")
    torch_paths.engine.model_runner.write_kernel = torch_paths.engine.model_runner.decode_kernel = None
    outs = [[o.outputs[0].token_ids for o in e.generate(prompts, params)] for e in (int8, torch_paths, plain)]
    assert outs[0] == outs[1]  # native kernels and torch paths read the same cache
    assert outs[0] == outs[2]  # this model's greedy tokens are not near-ties at int8's resolution


def test_default_cache_dtype_follows_the_weights(tiny_llama):
    """Unset, the cache is int8 for quantized weights computed in bf16 (the fast path) and the compute dtype else;
    "auto" always keeps the compute dtype."""
    folder = str(tiny_llama[1])
    cases = [
        ({"dtype": "bfloat16", "quantization": "q4_0"}, "int8", torch.uint8),
        ({"dtype": "bfloat16", "quantization": "q4_0", "kv_cache_dtype": "auto"}, "auto", torch.bfloat16),
        ({"dtype": "bfloat16"}, "auto", torch.bfloat16),
        ({"dtype": "float32", "quantization": "q4_0"}, "auto", torch.float32),
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
