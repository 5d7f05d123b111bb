"""The native prefill-attention kernel (a sequence's new tokens against its paged K/V, read in place) against float32
attention, through the same `paged_attention` entry the models call, and an engine with it against one without."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan, paged_attention

from . import machine


@pytest.fixture
def kernel(native_kernels):
    machine.require_native()
    return native_kernels.prefill_attention


def _case(n, ctx, heads, kv_heads, head_dim, block, seed=0):
    """q as the strided slice of a fused projection, K/V in scattered cache blocks."""
    gen = torch.Generator().manual_seed(seed)
    num_blocks = -(-ctx // block)
    kv = torch.randn(2, num_blocks + 5, block, kv_heads, head_dim, generator=gen).to(torch.bfloat16)
    table = torch.randperm(num_blocks + 5, generator=gen)[:num_blocks]
    qkv = torch.randn(n, heads + 2 * kv_heads, head_dim, generator=gen).to(torch.bfloat16)
    return qkv[:, :heads], kv, PrefillSpan(n, ctx, table)


def _attend(q, kv, span, kernel, scale, window, softcap):
    meta = AttentionMetadata(torch.zeros(span.num_tokens, dtype=torch.long), prefills=[span], prefill_kernel=kernel)
    return paged_attention(q, kv, meta, scale, window, softcap)


@pytest.mark.parametrize(
    "n, ctx, heads, kv_heads, head_dim, block",
    [
        (5, 5, 4, 2, 16, 4),  # fewer rows than a task
        (37, 37, 9, 3, 64, 16),  # the embedded model's heads
        (20, 53, 9, 3, 64, 16),  # a chunk after 33 cached positions
        (64, 64, 4, 4, 128, 8),  # two column passes of P V
        (33, 90, 8, 2, 48, 4),  # a partial column pass
        (3, 130, 2, 1, 80, 16),
        (9, 9, 4, 2, 24, 4),  # partial vectors
    ],
)
@pytest.mark.parametrize("window, softcap", [(None, None), (12, None), (None, 30.0), (40, 5.0)])
def test_matches_float32_attention(kernel, n, ctx, heads, kv_heads, head_dim, block, window, softcap):
    q, kv, span = _case(n, ctx, heads, kv_heads, head_dim, block)
    expected = _attend(q.float(), kv.float(), span, None, 0.2, window, softcap)
    got = _attend(q, kv, span, kernel, 0.2, window, softcap)
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    # bf16 inputs and outputs: the error of torch's own bf16 attention on these cases is ~0.008
    torch.testing.assert_close(got.float(), expected, atol=2e-2, rtol=0)


def test_engine_with_and_without_the_kernel(kernel, tiny_llama):
    """Prompts prefilled in chunks of 16 (so later chunks attend to cached positions): the first tokens' log
    probabilities agree with the torch path's to bf16 precision."""
    prompts = [list(range(300, 341)), [5, 100, 2000, 31, 7, 9]]
    params = SamplingParams(temperature=0, max_tokens=1, logprobs=5)
    runs = []
    for use_kernel in (True, False):
        llm = LLM(str(tiny_llama[2]), dtype="bfloat16", block_size=4, max_num_batched_tokens=16)
        assert llm.engine.model_runner.prefill_kernel is kernel
        if not use_kernel:
            llm.engine.model_runner.prefill_kernel = None
        runs.append([o.outputs[0] for o in llm.generate(prompts, params)])
    for native, plain in zip(*runs, strict=True):
        assert native.token_ids == plain.token_ids
        token, top = native.token_ids[0], plain.logprobs[0]
        assert abs(native.logprobs[0][token].logprob - top[token].logprob) < 0.1
        assert len(native.logprobs[0].keys() & top.keys()) >= 4  # the same top 5, but for a near tie at the end
