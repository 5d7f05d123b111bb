"""GraphRunner's capture / replay logic on the CPU, with a fake graph: capturing records the forward over the static
buffers, replaying runs it again over the same buffers and writes into the captured output (what a CUDA graph
does). Greedy tokens and logprobs must equal the eager runs'; replays must pick the smallest captured size."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.config import EngineConfig
from mistralpy.engine.graph_runner import GraphRunner, capture_sizes, graphs_off_reason
from mistralpy.errors import InvalidRequestError
from mistralpy.layers.rotary import RotaryEmbedding

SIZES = [1, 2, 4]


class FakeGraph:
    def __init__(self, fn, out: torch.Tensor) -> None:
        self.fn, self.out, self.replays = fn, out, 0

    def replay(self) -> None:
        self.out.copy_(self.fn())
        self.replays += 1


class FakeGraphFactory:
    def __init__(self) -> None:
        self.captured: list[int] = []  # the batch size of each capture, in order
        self.graphs: list[FakeGraph] = []

    def capture(self, fn):
        out = fn()
        self.captured.append(out.shape[0])
        self.graphs.append(FakeGraph(fn, out))
        return self.graphs[-1], out


def _llm(tiny_llama) -> LLM:
    return LLM(str(tiny_llama[1]), dtype="float32", block_size=4, enable_prefix_caching=False, max_num_seqs=8)


def _attach(llm: LLM, factory) -> GraphRunner:
    runner = llm.engine.model_runner
    kernels = {"write_kernel": runner.write_kernel, "decode_kernel": runner.decode_kernel}
    graphs = GraphRunner(runner.model, runner.kv_caches, SIZES, 16, runner.pad_block, 4, factory, kernels)
    graphs.capture_all()
    runner.graphs = graphs
    return graphs


def _generate(llm: LLM, n: int):
    prompts = [[5 + i, 100, 2000 + 7 * i, 31] for i in range(n)]
    params = [SamplingParams(temperature=0, max_tokens=3 + 2 * i, ignore_eos=True, logprobs=3) for i in range(n)]
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in llm.generate(prompts, params)]


def _assert_same(got, expected) -> None:
    for (tokens, logprobs), (want_tokens, want_logprobs) in zip(got, expected, strict=True):
        assert tokens == want_tokens
        for row, want in zip(logprobs, want_logprobs, strict=True):
            assert row.keys() == want.keys()
            assert all(row[t].logprob == pytest.approx(want[t].logprob, abs=1e-5) for t in row)


def test_capture_sizes_are_vllms():
    assert capture_sizes(1) == [1]
    assert capture_sizes(20) == [1, 2, 4, 8, 16]
    assert capture_sizes(1000) == [1, 2, 4, *range(8, 257, 8)]


def test_replays_equal_eager_and_pick_the_smallest_size(tiny_llama):
    llm = _llm(tiny_llama)
    expected = {n: _generate(llm, n) for n in (3, 6)}  # eager: before any graph
    factory = FakeGraphFactory()
    graphs = _attach(llm, factory)
    assert factory.captured == [4, 2, 1]  # once a size, largest first
    ptrs = graphs.static.data_ptrs()
    graphs.record_replays = True
    for n in (3, 6):  # 6 sequences: 5 and 6 above the largest size run eagerly, then 4, 3, ... replay
        _assert_same(_generate(llm, n), expected[n])
    assert factory.captured == [4, 2, 1]  # no capture after startup
    batches = [b for b, _ in graphs.replays]
    assert set(batches) == {1, 2, 3, 4}
    assert all(size == min(s for s in SIZES if s >= b) for b, size in graphs.replays)
    assert sum(g.replays for g in factory.graphs) == len(graphs.replays)
    assert graphs.static.data_ptrs() == ptrs  # the same buffers every replay


def test_replay_returns_the_captured_output(tiny_llama):
    llm = _llm(tiny_llama)
    factory = FakeGraphFactory()
    graphs = _attach(llm, factory)
    out_ptrs = {g.out.shape[0]: g.out.data_ptr() for g in factory.graphs}
    runner = llm.engine.model_runner
    for batch, size in ((3, 4), (1, 1), (2, 2), (4, 4)):
        ids, pos = torch.arange(5, 5 + batch), torch.full((batch,), 4)
        hidden = graphs.replay(ids, pos, _decode_meta(runner, batch))
        assert hidden.shape[0] == batch and hidden.data_ptr() == out_ptrs[size]


def _decode_meta(runner, batch: int):
    from mistralpy.layers.attention import AttentionMetadata

    tables = torch.arange(batch * 2).view(batch, 2)
    lens = torch.full((batch,), 5)
    slots = tables[:, 1] * 4  # position 4: the first slot of each sequence's second block
    return AttentionMetadata(slots, batch, tables, lens, decode_kernel=runner.decode_kernel)


def test_padding_rows_leave_real_rows_and_blocks_alone(tiny_llama):
    """One replay of 3 sequences padded to 4 against the eager forward of the same 3: equal outputs, and the padding
    row wrote only the padding block."""
    llm = _llm(tiny_llama)
    runner = llm.engine.model_runner
    graphs = _attach(llm, FakeGraphFactory())
    torch.manual_seed(0)
    for cache in runner.kv_caches:
        cache.copy_(torch.randn_like(cache))
    before = [c.clone() for c in runner.kv_caches]
    ids, pos, meta = torch.tensor([5, 6, 7]), torch.tensor([4, 4, 4]), _decode_meta(runner, 3)
    got = graphs.replay(ids, pos, meta).clone()
    after_graph = [c.clone() for c in runner.kv_caches]
    for cache, saved in zip(runner.kv_caches, before, strict=True):
        cache.copy_(saved)
    want = runner.model(ids, pos, runner.kv_caches, _decode_meta(runner, 3))
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    pad, written = runner.pad_block, meta.slot_mapping
    for graph_cache, eager_cache, saved in zip(after_graph, runner.kv_caches, before, strict=True):
        graph_rows, eager_rows, saved_rows = (c[:, :pad].flatten(1, 2) for c in (graph_cache, eager_cache, saved))
        assert torch.allclose(graph_rows[:, written], eager_rows[:, written], atol=1e-5, rtol=0)
        untouched = torch.ones(graph_rows.shape[1], dtype=torch.bool)
        untouched[written] = False
        assert torch.equal(graph_rows[:, untouched], saved_rows[:, untouched])  # the padding row wrote no real block
        assert not torch.equal(graph_cache[:, pad], saved[:, pad])  # but the padding block


def test_the_decode_forward_has_no_host_sync(tiny_llama):
    """The captured forward run on the "meta" device, where .item(), int(t) and .tolist() raise: a forward that
    reads a value on the host (which a CUDA graph cannot capture) fails here."""
    llm = _llm(tiny_llama)
    runner = llm.engine.model_runner
    model = runner.model.to("meta")
    for m in model.modules():
        if isinstance(m, RotaryEmbedding):
            m.build_cache("meta")
    caches = [torch.empty_like(c, device="meta") for c in runner.kv_caches]
    factory = FakeGraphFactory()
    graphs = GraphRunner(model, caches, SIZES, 16, runner.pad_block, 4, factory)
    graphs.capture_all()
    meta = _decode_meta(runner, 3)
    meta.decode_kernel = None
    hidden = graphs.replay(torch.tensor([5, 6, 7]), torch.tensor([4, 4, 4]), meta)
    assert hidden.device.type == "meta" and hidden.shape == (3, model.config.hidden_size)
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.ones(2, device="meta").sum().item()  # the premise: the meta device refuses host reads


def test_graphs_are_off_on_the_cpu_and_with_enforce_eager(tiny_llama):
    llm = _llm(tiny_llama)
    runner = llm.engine.model_runner
    assert runner.graphs is None
    cpu = torch.device("cpu")
    assert "graphs are CUDA's" in graphs_off_reason(runner.model, cpu, EngineConfig(), False)
    eager = EngineConfig(enforce_eager=True)
    assert graphs_off_reason(runner.model, torch.device("cuda", 0), eager, False) == "enforce_eager"
    spans = graphs_off_reason(runner.model, torch.device("cuda", 0), EngineConfig(), False)
    assert spans == "the model spans devices (device_layers / n_gpu_layers)"  # weights on the CPU, KV on CUDA
    with pytest.raises(InvalidRequestError, match="enforce_eager must be True or False"):
        EngineConfig(enforce_eager="yes")
