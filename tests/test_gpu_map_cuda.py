"""Layer offload and CUDA graphs on a real GPU (skipped without one): layers split between cuda:0 and the CPU give the
CPU's greedy tokens; a captured decode graph replays what the eager forward computes."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.engine.graph_runner import CudaGraphFactory, GraphRunner
from mistralpy.layers.attention import AttentionMetadata
from mistralpy.layers.native import bind_native
from mistralpy.layers.rotary import RotaryEmbedding

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = [[5, 100, 2000, 31], list(range(300, 320))]
PARAMS = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=3)


def _run(llm: LLM):
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in llm.generate(PROMPTS, PARAMS)]


@pytest.mark.parametrize("spec", ["cuda:0:1;cpu:1", "cpu:1;cuda:0:1", "cuda:0:2"])
def test_layers_on_cuda_give_the_cpus_tokens(tiny_llama, spec):
    options = dict(dtype="float32", block_size=4, enable_prefix_caching=False)
    expected = _run(LLM(str(tiny_llama[1]), **options))
    llm = LLM(str(tiny_llama[1]), device_layers=spec, **options)
    runner = llm.engine.model_runner
    want = [d.type for d in runner.layer_map.dmap.layer_devices()]
    assert [c.device.type for c in runner.kv_caches] == want
    assert [next(layer.parameters()).device.type for layer in runner.model.model.layers] == want
    for (tokens, logprobs), (want_tokens, want_logprobs) in zip(_run(llm), expected, strict=True):
        assert tokens == want_tokens
        for row, ref in zip(logprobs, want_logprobs, strict=True):
            top = max(ref, key=lambda t: ref[t].logprob)
            assert row[top].logprob == pytest.approx(ref[top].logprob, abs=1e-3)


def test_cuda_graph_replay_equals_eager(tiny_llama):
    llm = LLM(str(tiny_llama[1]), dtype="float32", block_size=4, max_num_seqs=8)
    runner = llm.engine.model_runner
    model = runner.model.to("cuda")
    bind_native(model, None)
    for m in model.modules():
        if isinstance(m, RotaryEmbedding):
            m.build_cache("cuda")
    caches = [torch.zeros_like(c, device="cuda") for c in runner.kv_caches]
    graphs = GraphRunner(model, caches, [1, 2, 4], 16, runner.pad_block, 4, CudaGraphFactory())
    graphs.capture_all()
    ptrs = graphs.static.data_ptrs()

    def meta(batch: int) -> AttentionMetadata:
        tables = torch.arange(batch * 2, device="cuda").view(batch, 2)
        lens = torch.full((batch,), 5, device="cuda")
        return AttentionMetadata(tables[:, 1] * 4, batch, tables, lens)

    for batch in (3, 1, 4, 2):
        ids = torch.arange(5, 5 + batch, device="cuda")
        pos = torch.full((batch,), 4, device="cuda")
        saved = [c.clone() for c in caches]
        got = graphs.replay(ids, pos, meta(batch)).clone()
        for cache, before in zip(caches, saved, strict=True):
            cache.copy_(before)
        want = model(ids, pos, caches, meta(batch))
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert graphs.static.data_ptrs() == ptrs
