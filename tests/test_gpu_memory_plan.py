"""Memory planning for a GPU's KV pool (engine/gpu_memory.py, runner_setup.py): the arithmetic against numbers worked
by hand, the error that names them, a block's bytes against the cache's own tensor, the profile forward on the CPU,
and gpu_memory_utilization refused where the engine runs on the CPU."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM
from mistralpy.engine.gpu_memory import GIB, MemoryProfile, kv_blocks_for_memory
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.engine.runner_setup import block_bytes, profile_forward
from mistralpy.errors import InvalidRequestError, ModelLoadError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model


def test_the_pool_gets_what_is_left():
    # 0.9 x 80 GiB = 72 GiB; - 16 (weights) - 4 (activations) - 2 (context) = 50 GiB; blocks of 2 MiB: 25600
    profile = MemoryProfile(80 * GIB, 16 * GIB, 4 * GIB, 2 * GIB)
    assert kv_blocks_for_memory(profile, 0.9, 2 * 2**20, min_blocks=256) == 25600
    assert kv_blocks_for_memory(profile, 0.5, 2 * 2**20, min_blocks=1) == 18 * 512  # 40 - 22 = 18 GiB, 512 blocks a GiB


def test_a_model_that_does_not_fit_is_an_error_naming_the_numbers():
    profile = MemoryProfile(24 * GIB, 20 * GIB, 1 * GIB, 1 * GIB)  # 21.6 - 22 < 0
    with pytest.raises(ModelLoadError) as e:
        kv_blocks_for_memory(profile, 0.9, 2**20, min_blocks=8)
    message = str(e.value)
    for part in ("does not fit", "0.9 x 24.00 GiB", "20.00 GiB weights", "1.00 GiB peak activations",
                 "leaves 0.00 GiB", "0 blocks", "needs 8"):  # fmt: skip
        assert part in message
    few = MemoryProfile(24 * GIB, 20 * GIB, 0, 0)  # 1.6 GiB: 1638 blocks of 1 MiB, one sequence needs 2000
    with pytest.raises(ModelLoadError, match="1638 blocks of 0.00 GiB, and one sequence of max_model_len needs 2000"):
        kv_blocks_for_memory(few, 0.9, 2**20, min_blocks=2000)


def test_block_bytes_is_one_block_of_the_cache(tiny_llama):
    model = load_model(open_model_source(tiny_llama[1]), torch.float32)
    cfg = model.config
    for kv, itemsize, row in (("auto", 4, cfg.head_dim), ("int8", 1, cfg.head_dim + 4)):
        # every layer's K and V, each block_size rows of Hkv heads
        assert (
            block_bytes(cfg, 16, torch.float32, kv)
            == cfg.num_hidden_layers * 2 * 16 * cfg.num_key_value_heads * row * itemsize
        )
        runner = ModelRunner(model, 3, 16, torch.float32, kv)  # its pool: 3 blocks and the padding block
        assert runner.kv_cache.numel() * runner.kv_cache.element_size() == 4 * block_bytes(cfg, 16, torch.float32, kv)


def test_the_profile_forward_runs_a_full_step(tiny_llama):
    model = load_model(open_model_source(tiny_llama[1]), torch.float32)
    runner = ModelRunner(model, 4, 16, torch.float32)
    profile_forward(runner, 50, 8)
    written = runner.kv_cache[0, 0].flatten(0, 1).abs().sum((-1, -2))  # layer 0's K rows, per slot
    assert written.shape == (5 * 16,)  # 4 blocks and the padding block
    assert bool((written[:50] > 0).all()) and bool((written[50:] == 0).all())


def test_gpu_memory_utilization_on_a_cpu_engine_is_refused(tiny_llama):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        pytest.skip("this machine has CUDA: auto resolves to it")
    with pytest.raises(
        InvalidRequestError, match="gpu_memory_utilization is for a CUDA device; this engine runs on cpu"
    ):
        LLM(str(tiny_llama[1]), gpu_memory_utilization=0.8)


@pytest.mark.parametrize(
    "config, model, message",
    [(dict(anymoe=None, xlora="x"), torch.nn.Module(), "X-LoRA and AnyMoE models run on the CPU only"),
     (dict(), type("Vlm", (torch.nn.Module,), {"encode_images": None})(), "vision-language models run on the CPU")],
)  # fmt: skip
def test_what_runs_on_the_cpu_only_is_refused_elsewhere(config, model, message):
    from types import SimpleNamespace

    from mistralpy.device import Placement
    from mistralpy.engine.runner_setup import build_runner

    cfg = SimpleNamespace(**{**dict(block_size=16, xlora=None, anymoe=None), **config})
    placement = Placement(torch.device("meta"), "triton")  # any device but the CPU
    with pytest.raises(InvalidRequestError, match=message):
        engine = SimpleNamespace(placement=placement, tp=None, dtype=torch.bfloat16, kv_cache_dtype="auto", lora=None)
        build_runner(engine, model, cfg, 64, 64)
