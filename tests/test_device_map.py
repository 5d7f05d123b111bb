"""DeviceMap parsing (--device-layers, llama.cpp's --n-gpu-layers) and its errors; no model involved."""

from __future__ import annotations

import pytest
import torch

from mistralpy.config import EngineConfig
from mistralpy.engine.device_map import n_gpu_layers_map, parse_device_layers, resolve_device_map
from mistralpy.errors import InvalidRequestError

CPU, CUDA0, CUDA1 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)


def two_gpus() -> int:
    return 2


def no_gpu() -> int:
    return 0


def test_entries_in_layer_order():
    dmap = parse_device_layers("cuda:0:2;cpu:3; cuda:1:1", two_gpus)
    assert dmap.layer_devices() == [CUDA0, CUDA0, CPU, CPU, CPU, CUDA1]
    assert dmap.segments() == [(0, 2, CUDA0), (2, 5, CPU), (5, 6, CUDA1)]
    assert dmap.head == CUDA1 and dmap.embed == CPU
    assert parse_device_layers("cuda:4", two_gpus).layer_devices() == [CUDA0] * 4  # "cuda" is cuda:0


def _llama_cpp_slots(ngl: int, n_layer: int) -> list[bool]:
    """llama.cpp's placement (src/llama-model.cpp): n_layer + 1 slots, the last the output; slot il is offloaded
    when il >= max(n_layer + 1 - ngl, 0)."""
    start = max(n_layer + 1 - ngl, 0)
    return [il >= start for il in range(n_layer + 1)]


@pytest.mark.parametrize("ngl", [0, 1, 2, 5, 6, 7, 99])
def test_n_gpu_layers_as_llama_cpp(ngl):
    n_layer = 6
    dmap = n_gpu_layers_map(ngl, n_layer, two_gpus)
    slots = _llama_cpp_slots(ngl, n_layer)
    assert [d == CUDA0 for d in dmap.layer_devices()] == slots[:n_layer]
    assert (dmap.head == CUDA0) == slots[n_layer]
    assert dmap.embed == CPU  # llama.cpp never offloads the input layer


@pytest.mark.parametrize(
    "text, cuda, message",
    [
        ("tpu:0:3", two_gpus, "unknown device 'tpu:0'"),
        ("cuda:x:3", two_gpus, "unknown device 'cuda:x'"),
        ("cuda:0:3", no_gpu, "needs CUDA"),
        ("cuda:2:3", two_gpus, "torch sees 2 CUDA device"),
        ("cpu", two_gpus, "is not DEVICE:COUNT"),
        ("cpu:3;", two_gpus, "is not DEVICE:COUNT"),
        ("cpu:-1", two_gpus, "layer count must be an integer"),
        ("cpu:two", two_gpus, "layer count must be an integer"),
        ("", two_gpus, "non-empty string"),
    ],
)
def test_bad_device_layers(text, cuda, message):
    with pytest.raises(InvalidRequestError, match=message):
        parse_device_layers(text, cuda)


def test_counts_must_add_up_to_the_model():
    with pytest.raises(InvalidRequestError, match="places 2 \\+ 3 = 5 layers; the model has 6"):
        resolve_device_map("cpu:2;cpu:3", None, 6)
    assert resolve_device_map("cpu:2;cpu:4", None, 6).num_layers == 6
    assert resolve_device_map(None, None, 6) is None


def test_engine_config_checks_early():
    with pytest.raises(InvalidRequestError, match="not both"):
        EngineConfig(device_layers="cpu:2", n_gpu_layers=0)
    with pytest.raises(InvalidRequestError, match="unknown device"):
        EngineConfig(device_layers="gpu:2")
    with pytest.raises(InvalidRequestError, match="non-negative integer"):
        EngineConfig(n_gpu_layers=-1)
    if torch.cuda.device_count() == 0:
        with pytest.raises(InvalidRequestError, match="needs CUDA"):
            EngineConfig(n_gpu_layers=4)
    EngineConfig(n_gpu_layers=0, device_layers=None)  # all on the CPU: fine anywhere


def test_command_line_flags():
    import argparse

    from mistralpy.cli_args import add_model_args, engine_options

    p = argparse.ArgumentParser()
    add_model_args(p)
    options = engine_options(p.parse_args(["--device-layers", "cuda:0:20;cpu:10", "--enforce-eager"]))
    assert (options["device_layers"], options["n_gpu_layers"], options["enforce_eager"]) == (
        "cuda:0:20;cpu:10",
        None,
        True,
    )
    options = engine_options(p.parse_args(["-ngl", "99"]))
    assert (options["device_layers"], options["n_gpu_layers"], options["enforce_eager"]) == (None, 99, False)
