"""Where an engine runs (mistralpy/device.py): device names resolved with and without CUDA, the kernels each device
binds, the options refused before any load, and a step's index tensors sent to the device in one packed copy."""

from __future__ import annotations

import pytest
import torch

from mistralpy.config import EngineConfig
from mistralpy.device import check_memory_utilization, kernel_backend, kv_cache_dtype_for, resolve_device
from mistralpy.engine.model_runner import StepInputs
from mistralpy.engine.step_transfer import move_step
from mistralpy.errors import InvalidRequestError
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan


@pytest.mark.parametrize(
    "name, cuda, want",
    [("auto", True, "cuda:0"), ("auto", False, "cpu"), ("cpu", True, "cpu"), ("cuda", True, "cuda:0"),
     ("cuda:1", True, "cuda:1")],
)  # fmt: skip
def test_devices_resolve(name, cuda, want):
    assert resolve_device(name, cuda, cuda_count=2) == torch.device(want)


def test_cuda_without_cuda_is_an_error_not_a_cpu_run():
    with pytest.raises(InvalidRequestError, match="torch sees no CUDA device"):
        resolve_device("cuda", False)
    with pytest.raises(InvalidRequestError, match="torch sees 1 CUDA device"):
        resolve_device("cuda:1", True, cuda_count=1)
    for bad in ("gpu", "cuda:x", "", 3):
        with pytest.raises(InvalidRequestError, match="unsupported device"):
            resolve_device(bad, True)


def test_each_device_binds_its_kernels():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert kernel_backend(cpu, None, triton_interpreter=False) == "native"
    assert kernel_backend(cuda, None, triton_interpreter=False) == "triton"
    assert kernel_backend(cpu, "triton", triton_interpreter=True) == "triton"
    with pytest.raises(InvalidRequestError, match="TRITON_INTERPRET=1"):
        kernel_backend(cpu, "triton", triton_interpreter=False)
    with pytest.raises(InvalidRequestError, match="native kernels run on the CPU only"):
        kernel_backend(cuda, "native", triton_interpreter=False)
    with pytest.raises(InvalidRequestError, match="unknown kernels"):
        kernel_backend(cpu, "cuda", triton_interpreter=False)


def test_kv_rows_per_backend():
    assert kv_cache_dtype_for("triton", None, int8_default=True) == "auto"
    assert kv_cache_dtype_for("native", None, int8_default=True) == "int8"
    assert kv_cache_dtype_for("native", "auto", int8_default=True) == "auto"
    with pytest.raises(InvalidRequestError, match="'int8' runs on the CPU's kernels only"):
        kv_cache_dtype_for("triton", "int8", int8_default=False)


def test_gpu_memory_utilization_is_for_cuda_only():
    cuda = torch.device("cuda", 0)
    assert check_memory_utilization(None, cuda) == 0.9
    assert check_memory_utilization(0.5, cuda) == 0.5
    assert check_memory_utilization(None, torch.device("cpu")) is None
    with pytest.raises(InvalidRequestError, match="for a CUDA device; this engine runs on cpu"):
        check_memory_utilization(0.8, torch.device("cpu"))
    for bad in (0, 1.5, -0.1, True, "0.9"):
        with pytest.raises(InvalidRequestError, match=r"fraction in \(0, 1\]"):
            check_memory_utilization(bad, cuda)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(device="cpu", gpu_memory_utilization=0.8), "for a CUDA device"),
     (dict(device="tpu"), "unsupported device"),
     (dict(gpu_memory_utilization=2.0), "fraction"),
     (dict(device="cuda", kv_cache_dtype="int8"), "'int8' runs on the CPU's kernels only"),
     (dict(kernels="opencl"), "unknown kernels")],
)  # fmt: skip
def test_engine_config_refuses_bad_device_options_before_loading(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        EngineConfig(**kwargs)


def test_a_step_goes_to_the_device_in_one_packed_copy():
    meta = AttentionMetadata(torch.tensor([3, 9, 10, 11]), 1, torch.tensor([[0, 2]]), torch.tensor([4]))
    meta.prefills = [PrefillSpan(3, 3, torch.tensor([5]))]
    inputs = StepInputs([], torch.tensor([1, 2, 3, 4]), torch.tensor([3, 0, 1, 2]), meta, [], [], [], {})
    shapes = [(4,), (4,), (4,), (1, 2), (1,), (1,)]
    move_step(inputs, torch.device("meta"))  # a device that is not the CPU: the same code as CUDA's but the pin
    moved = [inputs.input_ids, inputs.positions, meta.slot_mapping, meta.decode_block_tables, meta.decode_lens,
             meta.prefills[0].block_table]  # fmt: skip
    assert [t.device.type for t in moved] == ["meta"] * 6
    assert [tuple(t.shape) for t in moved] == shapes
    assert all(t.dtype == torch.long for t in moved)


@pytest.mark.parametrize("command", [["run"], ["serve"], ["bench"]])
def test_run_serve_and_bench_take_the_device_flags(command):
    from mistralpy.cli import build_parser
    from mistralpy.cli_args import engine_options

    args = build_parser().parse_args([*command, "--device", "cuda:1", "--gpu-memory-utilization", "0.7"])
    options = engine_options(args)
    assert (options["device"], options["gpu_memory_utilization"]) == ("cuda:1", 0.7)
    defaults = engine_options(build_parser().parse_args(command))
    assert (defaults["device"], defaults["gpu_memory_utilization"]) == ("auto", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize(
    "flags, message",
    [(["--device", "cuda"], "torch sees no CUDA device"),
     (["--device", "cpu", "--gpu-memory-utilization", "0.5"], "gpu_memory_utilization is for a CUDA device")],
)  # fmt: skip
def test_the_cli_refuses_in_one_line(flags, message):
    from .test_cli import run_cli

    out = run_cli("run", "--prompt", "x", "--max-tokens", "1", *flags)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("slots", [[0, -1, 1, 0], [2] * 3])  # (meta tensors have no nonzero: not the long form)
def test_a_lora_step_indexes_on_the_models_device(slots):
    from mistralpy.lora.layer import LoRAStep

    step = LoRAStep.from_slots(slots, torch.device("meta"))
    tensors = [step.gather, step.keep, step.targets] + [rows for _, rows in step.groups]
    assert all(t.device.type == "meta" for t in tensors if t is not None)
    assert any(t is not None for t in tensors) or step.groups == [(2, None)]
