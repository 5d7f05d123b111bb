"""Weights put on their device as they are read, each module built for its site's kernels (engine/weight_sites.py).

A GPU segment is stood in for by the CPU running the Triton kernels in Triton's interpreter: a GGUF model split
into a native segment and a Triton one keeps its blocks on both sides (TritonGGUFLinear on the Triton side), binds
each segment's kernels, and computes what the all-native model computes. The "meta" device stands in for a device
other than the host: the loader puts each of its weights there directly."""

from __future__ import annotations

import os

import gguf
import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU
from mistralpy.config import EngineConfig  # noqa: E402
from mistralpy.device import Placement  # noqa: E402
from mistralpy.engine.device_map import CPU, DeviceEntry, DeviceMap, parse_device_layers  # noqa: E402
from mistralpy.engine.layer_placement import LayerPlacement  # noqa: E402
from mistralpy.engine.model_runner import ModelRunner  # noqa: E402
from mistralpy.engine.weight_sites import Site, WeightSites, kv_kernels, weight_sites  # noqa: E402
from mistralpy.gpu.gguf_linear import TritonGGUFLinear  # noqa: E402
from mistralpy.gpu.kernel_set import TritonKernels  # noqa: E402
from mistralpy.layers.native import NativeLayer  # noqa: E402
from mistralpy.loader import open_model_source  # noqa: E402
from mistralpy.loader.model_loader import load_model  # noqa: E402
from mistralpy.quant.quantized_linear import FusedQuantizedLinear  # noqa: E402

from .helpers import llama_to_gguf  # noqa: E402
from .model_steps import BLOCK, bound_step  # noqa: E402

Q = gguf.GGMLQuantizationType
META = torch.device("meta")
TWO_GPUS = lambda: 2  # noqa: E731 - the device count a map is checked against


def _linear_parts(layer) -> list:
    linears = [layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj]
    return [p for m in linears for p in (m.parts if isinstance(m, FusedQuantizedLinear) else [m])]


def test_sites_follow_the_map():
    dmap = parse_device_layers("cpu:1;cuda:0:2", TWO_GPUS)
    cuda = torch.device("cuda", 0)
    for tied in (False, True):
        sites = WeightSites.from_map(dmap, tied)
        assert [s.device.type for s in sites.layers] == ["cpu", "cuda", "cuda"]
        assert [s.kernels for s in sites.layers] == ["native", "triton", "triton"]
        assert sites.site("model.layers.2.mlp.down_proj") == Site(cuda, "triton")
        assert sites.site("model.norm") == sites.site("lm_head") == Site(cuda, "triton")
        # a tied table is the head's weight too: it lives with the head
        assert sites.site("model.embed_tokens") == (Site(cuda, "triton") if tied else Site(CPU, "native"))
        assert sites.on_host().site("model.layers.1.self_attn.qkv_proj") == Site(CPU, "triton")
        assert kv_kernels(sites, Placement(CPU, "native")) == "triton"  # one row format for every pool


def test_a_cpu_engine_keeps_todays_load(tiny_llama):
    cfg = open_model_source(str(tiny_llama[1])).model_config()
    native = Placement(CPU, "native")
    assert weight_sites(EngineConfig(), native, cfg) is None
    assert weight_sites(EngineConfig(device_layers="cpu:1;cpu:1"), native, cfg) is None
    assert kv_kernels(None, native) == "native"
    sites = weight_sites(EngineConfig(kernels="triton"), Placement(CPU, "triton"), cfg)
    assert {s.kernels for s in sites.layers} == {"triton"}


def test_each_weight_goes_to_its_device_as_it_is_read(tiny_llama, tmp_path):
    """Layer 1 and the head on another device: their weights (GGUF blocks included) are there, nothing of them is
    left in host memory; layer 0 and the untied input embeddings stay on the CPU."""
    path = tmp_path / "q.gguf"
    llama_to_gguf(tiny_llama[0], path, qtypes={"attn": Q.Q8_0, "ffn": Q.Q4_0})
    dmap = DeviceMap((DeviceEntry(CPU, 1), DeviceEntry(META, 1, "triton")), head=META, head_kernels="triton")
    model = load_model(open_model_source(path), torch.float32, sites=WeightSites.from_map(dmap, tied=False))
    inner = model.model
    on = {n: t.device for n, t in [*model.named_parameters(), *model.named_buffers()]}
    assert {d for n, d in on.items() if n.startswith("model.layers.1.") or n.startswith(("lm_head", "model.norm"))} == {
        META
    }
    assert {d for n, d in on.items() if n.startswith(("model.layers.0.", "model.embed_tokens"))} == {CPU}
    assert all(isinstance(p, TritonGGUFLinear) for p in _linear_parts(inner.layers[1]))
    assert not any(isinstance(p, TritonGGUFLinear) for p in _linear_parts(inner.layers[0]))


@pytest.mark.parametrize("triton_first", [False, True])
def test_a_gguf_model_split_between_native_and_triton_kernels(tiny_llama, tmp_path, triton_first):
    """llama.cpp's -ngl shape (CPU layers first, the GPU's last with the head) and the issue's "cuda:0:N;cpu:M"."""
    path = tmp_path / "q.gguf"
    llama_to_gguf(tiny_llama[0], path, qtypes={"attn": Q.Q8_0, "ffn": Q.Q4_0})
    triton, native = DeviceEntry(CPU, 1, "triton"), DeviceEntry(CPU, 1)
    entries = (triton, native) if triton_first else (native, triton)
    dmap = DeviceMap(entries, head=CPU, head_kernels=entries[-1].kernels)
    split = ModelRunner(
        load_model(open_model_source(path), torch.bfloat16, sites=WeightSites.from_map(dmap, tied=False)),
        16, BLOCK, torch.bfloat16, "auto", placement=Placement(CPU, "native"),
    )  # fmt: skip
    LayerPlacement(dmap).apply(split.model)
    plain = ModelRunner(load_model(open_model_source(path), torch.bfloat16), 16, BLOCK, torch.bfloat16, "auto")
    layers = split.model.model.layers
    t, n = (layers[0], layers[1]) if triton_first else (layers[1], layers[0])
    assert all(isinstance(p, TritonGGUFLinear) for p in _linear_parts(t))  # the blocks stay blocks on both sides
    assert not any(isinstance(p, TritonGGUFLinear) for p in _linear_parts(n))
    assert all(isinstance(m.native, TritonKernels) for m in t.modules() if isinstance(m, NativeLayer))
    assert not any(isinstance(m.native, TritonKernels) for m in n.modules() if isinstance(m, NativeLayer))
    prompt = [7, 300, 41, 5000, 12, 9, 77, 1024, 3]
    for ids, start in [(prompt[:5], 0), (prompt[5:], 5), ([11], 9), ([4000], 10)]:
        got, want = bound_step(split, ids, start), bound_step(plain, ids, start)
        # bf16 activations, int8-quantized ones on the native side only: as test_gpu_engine_path's bound
        torch.testing.assert_close(got, want, atol=0.05 * want.abs().max().item(), rtol=0)
