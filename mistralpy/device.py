"""Where an engine runs: its torch device (`--device cuda|cpu|auto`) and which kernels its layers bind there (the
C++ CPU kernels or the Triton ones of mistralpy.gpu). Pure functions of their inputs; `placement_of` reads
torch.cuda.is_available() and the environment once and hands them in. Triton is imported only for a Triton
placement (`kernel_module`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import InvalidRequestError

DEVICES = ("auto", "cpu", "cuda")
KERNELS = ("native", "triton")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    kernels: str  # "native": the C++ CPU kernels (where built, else torch's paths); "triton": mistralpy.gpu

    @property
    def triton(self) -> bool:
        return self.kernels == "triton"


def check_device(name: object) -> str:
    """`name` as given: auto, cpu, cuda or cuda:N."""
    if not isinstance(name, str) or not (name in DEVICES or _cuda_index(name) is not None):
        raise InvalidRequestError(f"unsupported device {name!r}; use one of: auto, cpu, cuda, cuda:N")
    return name


def resolve_device(name: str, cuda_available: bool, cuda_count: int = 1) -> torch.device:
    """auto -> cuda when CUDA is available, else cpu; cuda asked for without CUDA is an error, never a CPU run."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda:0" if cuda_available else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not cuda_available:
        raise InvalidRequestError(
            f"device {name!r} was asked for, but torch sees no CUDA device (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none'}); use --device cpu or auto"
        )
    index = _cuda_index(name) or 0
    if index >= cuda_count:
        raise InvalidRequestError(f"device {name!r}: torch sees {cuda_count} CUDA device(s)")
    return torch.device("cuda", index)


def kernel_backend(device: torch.device, requested: str | None, triton_interpreter: bool) -> str:
    """The kernels a device's layers bind: CUDA runs the Triton kernels, the CPU its C++ ones. `requested` "triton"
    on the CPU runs the Triton kernels through Triton's interpreter (TRITON_INTERPRET=1: the tests' way to run the
    GPU path here); "native" on CUDA is an error (the C++ kernels read CPU memory only)."""
    if requested is not None and requested not in KERNELS:
        raise InvalidRequestError(f"unknown kernels {requested!r}; use one of: {', '.join(KERNELS)}")
    if device.type == "cuda":
        if requested == "native":
            raise InvalidRequestError("the native kernels run on the CPU only; a CUDA device runs the Triton kernels")
        return "triton"
    if requested == "triton" and not triton_interpreter:
        raise InvalidRequestError("Triton kernels on the CPU need Triton's interpreter: set TRITON_INTERPRET=1")
    return requested or "native"


def check_memory_utilization(value: float | None, device: torch.device) -> float | None:
    """--gpu-memory-utilization: a fraction in (0, 1], for a CUDA device only (a CPU's KV pool is sized by
    --kv-cache-tokens); None: 0.9 on CUDA, as vLLM."""
    if value is None:
        return 0.9 if device.type == "cuda" else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InvalidRequestError(f"gpu_memory_utilization must be a fraction in (0, 1], got {value!r}")
    if device.type != "cuda":
        raise InvalidRequestError(
            f"gpu_memory_utilization is for a CUDA device; this engine runs on {device} (size its KV cache with "
            "kv_cache_tokens or num_kv_blocks)"
        )
    return float(value)


def check_device_options(device: object, utilization: object, kernels: object, kv_cache_dtype: str | None) -> None:
    """EngineConfig's device fields, checked before any load: what is wrong whatever torch sees."""
    check_device(device)
    if kernels is not None and kernels not in KERNELS:
        raise InvalidRequestError(f"unknown kernels {kernels!r}; use one of: {', '.join(KERNELS)}")
    if utilization is not None:
        check_memory_utilization(utilization, torch.device("cuda"))
        if device == "cpu":
            check_memory_utilization(utilization, torch.device("cpu"))
    if kernels == "triton" or str(device).startswith("cuda"):
        kv_cache_dtype_for("triton", kv_cache_dtype, int8_default=False)


def kv_cache_dtype_for(kernels: str, requested: str | None, int8_default: bool) -> str:
    """The KV rows' format: the Triton attention reads compute-dtype rows only, so "int8" there is an error and the
    default is "auto"; the native kernels take either (`int8_default`: layers.kv_cache.default_kv_cache_dtype)."""
    if kernels == "triton":
        if requested == "int8":
            raise InvalidRequestError(
                "kv_cache_dtype 'int8' runs on the CPU's kernels only; a CUDA device takes 'auto'"
            )
        return "auto"
    return requested or ("int8" if int8_default else "auto")


def placement_of(device: str, kernels: str | None) -> Placement:
    """The engine's Placement, from what torch sees now."""
    cuda = torch.cuda.is_available()
    resolved = resolve_device(device, cuda, torch.cuda.device_count() if cuda else 0)
    return Placement(resolved, kernel_backend(resolved, kernels, os.environ.get("TRITON_INTERPRET") == "1"))


def _cuda_index(name: str) -> int | None:
    if name == "cuda":
        return 0
    head, _, tail = name.partition(":")
    return int(tail) if head == "cuda" and tail.isdigit() else None


def kernel_module(placement: Placement):
    """What the model's layers and attention call: the C++ module (None where it is not built) or the Triton kernels
    (imported here only, so a CPU engine never imports Triton)."""
    if placement.triton:
        from .gpu.kernel_set import TritonKernels

        return TritonKernels()
    from . import kernels

    return kernels.native_module()


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model's weights, buffers and rotary tables on `device` (the tables are plain attributes, rebuilt there)."""
    if device.type == "cpu":
        return model
    from .layers.rotary import RotaryEmbedding

    model.to(device)
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.build_cache(device)
    return model
