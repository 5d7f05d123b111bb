"""Layer offload with two CPU "devices": the mapping logic does not depend on what the devices are, so a map whose
entries are both the CPU must put each layer's KV in its entry's pool, move the activations exactly at the entry
boundaries, and compute what the unsplit model computes (greedy tokens and logprobs equal, not close)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mistralpy import LLM, SamplingParams
from mistralpy.engine.device_map import DeviceEntry, DeviceMap
from mistralpy.engine.layer_placement import LayerPlacement, Move, _move_layer, _unshare, meta_on
from mistralpy.errors import InvalidRequestError
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan
from mistralpy.quant.native_linear import NativeQuantLinear

CPU = torch.device("cpu")
PROMPTS = [[5, 100, 2000, 31, 7, 9], list(range(300, 341))]
PARAMS = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=5)


def _run(llm: LLM, prompts=PROMPTS, params=PARAMS):
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in llm.generate(prompts, params)]


def _assert_kv_in_segment_pools(runner, counts: list[int]) -> None:
    pools = runner.layer_map.pools
    assert [p.shape[0] for p in pools] == counts
    layer = 0
    for pool, count in zip(pools, counts, strict=True):
        for i in range(count):
            cache = runner.kv_caches[layer]
            assert cache.device == pool.device and cache.shape == pool.shape[1:]
            assert cache.untyped_storage().data_ptr() == pool.untyped_storage().data_ptr()
            assert cache.data_ptr() == pool[i].data_ptr()
            layer += 1


@pytest.mark.parametrize("tie", [False, True])
def test_tiny_llama_split_equals_unsplit(tiny_llama, tmp_path, tie):
    folder = tiny_llama[1]
    if tie:  # the tied table serves the embeddings and the head: it lives with the head
        from .helpers import make_tiny_llama

        folder = tmp_path / "tied"
        make_tiny_llama(folder, tie=True)
        for f in tiny_llama[1].glob("tokenizer*"):
            (folder / f.name).write_bytes(f.read_bytes())
    options = dict(dtype="float32", block_size=4, enable_prefix_caching=False)
    expected = _run(LLM(str(folder), **options))
    llm = LLM(str(folder), device_layers="cpu:1;cpu:1", **options)
    runner = llm.engine.model_runner
    _assert_kv_in_segment_pools(runner, [1, 1])
    assert all(p.device == CPU for p in runner.model.parameters())
    runner.layer_map.record_moves = True
    assert _run(llm, PROMPTS[:1], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)) == [
        (expected[0][0][:3], None)
    ]
    # one prefill and two decode forwards, each crossing into the embeddings, both segments and the head
    per_forward = [Move("embed", CPU), Move("layer 0", CPU), Move("layer 1", CPU), Move("head", CPU)]
    assert runner.layer_map.moves == per_forward * 3
    runner.layer_map.record_moves = False
    assert _run(llm) == expected


@pytest.mark.slow
def test_embedded_model_split_equals_unsplit():
    """The embedded SmolLM2 (30 layers, Q4_1 in bf16: the native kernels, and the DecoderStack when unsplit)."""
    prompts = [[1, 504, 3458, 282, 4649, 314], list(range(300, 330))]
    expected = _run(LLM(enable_prefix_caching=False), prompts)
    llm = LLM(enable_prefix_caching=False, device_layers="cpu:10;cpu:20")
    runner = llm.engine.model_runner
    _assert_kv_in_segment_pools(runner, [10, 20])
    assert runner.model.model.decode_stack() is None  # the stack spans all layers: off for a split model
    runner.layer_map.record_moves = True
    assert _run(llm, prompts) == expected
    sites = [m.site for m in runner.layer_map.moves]
    assert set(sites) == {"embed", "layer 0", "layer 10", "head"}
    assert sites.count("layer 0") == sites.count("layer 10") == sites.count("head") == sites.count("embed")


def test_one_cpu_segment_keeps_the_decoder_stack(tiny_llama):
    llm = LLM(str(tiny_llama[1]), dtype="float32", device_layers="cpu:2")
    assert llm.engine.model_runner.model.model.stack_allowed
    llm = LLM(str(tiny_llama[1]), dtype="float32", device_layers="cpu:1;cpu:1")
    assert not llm.engine.model_runner.model.model.stack_allowed


def test_wrong_layer_total_is_a_clear_error(tiny_llama):
    with pytest.raises(InvalidRequestError, match="places 1 \\+ 2 = 3 layers; the model has 2"):
        LLM(str(tiny_llama[1]), dtype="float32", device_layers="cpu:1;cpu:2")


def test_metadata_moves_to_another_device():
    """The "meta" device stands in for a GPU: every tensor the layers read moves, the native kernels stay behind."""
    table = torch.tensor([3, 1])
    meta = AttentionMetadata(
        torch.tensor([4, 5]), 1, torch.tensor([[2]]), torch.tensor([1]), [PrefillSpan(1, 5, table)],
        write_kernel=print, decode_kernel=print, prefill_kernel=print, prompt_lens=torch.tensor([1, 5]),
    )  # fmt: skip
    moved = meta_on(meta, torch.device("meta"))
    tensors = [moved.slot_mapping, moved.decode_block_tables, moved.decode_lens, moved.prompt_lens]
    assert all(t.device.type == "meta" for t in tensors + [moved.prefills[0].block_table])
    assert (moved.write_kernel, moved.decode_kernel, moved.prefill_kernel) == (None, None, None)
    assert meta.slot_mapping.device == CPU and meta.write_kernel is print  # the step's own metadata is untouched
    assert meta_on(meta, CPU).decode_kernel is print


def test_shared_modules_are_copied_per_device():
    shared = nn.Linear(2, 2)
    layers = [nn.Sequential(shared), nn.Sequential(shared), nn.Sequential(shared)]
    _unshare(layers, [CPU, torch.device("meta"), torch.device("meta")])
    assert layers[0][0] is shared
    assert layers[1][0] is layers[2][0] and layers[1][0] is not shared
    assert torch.equal(layers[1][0].weight, shared.weight)


def test_native_weights_are_refused_off_the_cpu(tiny_llama, tmp_path):
    llm = LLM(str(tiny_llama[1]), dtype="bfloat16", quantization="q4_0")
    layer = llm.engine.model_runner.model.model.layers[0]
    if not any(isinstance(m, NativeQuantLinear) for m in layer.modules()):
        pytest.skip("no native quantized linear on this machine")
    with pytest.raises(InvalidRequestError, match="native kernel only"):
        _move_layer(layer, torch.device("meta"))


def test_a_segment_on_another_device_gets_everything_it_reads(tiny_llama):
    """A real second device: the "meta" device (shapes only). Layer 1, its KV pool and the head on it; a missed move
    would mix devices in one op and raise. A prefill step, then a decode step."""
    llm = LLM(str(tiny_llama[1]), dtype="float32", block_size=4)
    runner, other = llm.engine.model_runner, torch.device("meta")
    model = runner.model
    placement = LayerPlacement(DeviceMap((DeviceEntry(CPU, 1), DeviceEntry(other, 1)), head=other))
    placement.apply(model)
    placement.record_moves = True
    pools = placement.kv_pools(8, 4, model.config, "auto", torch.float32, lambda shape, dtype: torch.zeros(shape))
    caches = [c for pool in pools for c in pool.unbind(0)]
    assert [c.device for c in caches] == [CPU, other]
    layers = model.model.layers
    assert {p.device for p in layers[0].parameters()} == {CPU} and {p.device for p in layers[1].parameters()} == {other}
    assert layers[0].self_attn.rotary.cos.device == CPU and layers[1].self_attn.rotary.cos.device == other
    layers[1].self_attn.rotary.reserve(16)  # growing the tables reads a position: a meta tensor holds no value
    kernels = dict(write_kernel=runner.write_kernel, decode_kernel=runner.decode_kernel)
    prefill = AttentionMetadata(torch.arange(3), prefills=[PrefillSpan(3, 3, torch.tensor([0]))], **kernels)
    decode = AttentionMetadata(torch.tensor([3]), 1, torch.tensor([[0]]), torch.tensor([4]), **kernels)
    for ids, pos, meta in ((torch.tensor([5, 6, 7]), [0, 1, 2], prefill), (torch.tensor([8]), [3], decode)):
        hidden = model(ids, torch.tensor(pos), caches, meta)
        logits = model.compute_logits(hidden)
        assert hidden.device == other and logits.shape == (len(ids), model.config.vocab_size)
    devices = [(m.site, m.device.type) for m in placement.moves]
    assert devices == [("embed", "cpu"), ("layer 0", "cpu"), ("layer 1", "meta"), ("head", "meta")] * 2
