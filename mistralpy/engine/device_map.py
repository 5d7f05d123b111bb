"""DeviceMap: which device each decoder layer, the input embeddings and the LM head live on (pure data).

Two ways to say it:
- `--device-layers "cuda:0:20;cpu:10"` (the issue's / mistral.rs's form): entries `DEVICE:COUNT` in layer order, the
  counts adding up to the model's layers. The input embeddings stay on the CPU and the final norm + LM head go with
  the last entry.
- `--n-gpu-layers N` (llama.cpp's `-ngl`): llama.cpp counts n_layer + 1 slots, the last one the output (final norm +
  LM head), and offloads the LAST N slots (src/llama-model.cpp: i_gpu_start = max(n_layer + 1 - ngl, 0)): N = 1 puts
  only the LM head on cuda:0, N >= n_layer + 1 everything. The input embeddings always stay on the CPU ("very little
  benefit to offloading the input layer"). A tied embedding table is used by the head too: it lives with the head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InvalidRequestError

CPU = torch.device("cpu")


@dataclass(frozen=True)
class DeviceEntry:
    device: torch.device
    count: int  # consecutive decoder layers on this device
    # the kernels its layers bind: "" for the device's own (site_kernels); "triton" on the CPU runs the GPU kernels
    # in Triton's interpreter, which is how a GPU segment is tested on a machine without one
    kernels: str = ""


@dataclass(frozen=True)
class DeviceMap:
    entries: tuple[DeviceEntry, ...]  # in layer order; one segment (own KV pool, a boundary before it) each
    head: torch.device  # the final norm and the LM head (and a tied embedding table)
    embed: torch.device = CPU  # the input embeddings
    head_kernels: str = ""  # as DeviceEntry.kernels, for the head

    @property
    def num_layers(self) -> int:
        return sum(e.count for e in self.entries)

    def segments(self) -> list[tuple[int, int, torch.device]]:
        """(first layer, end layer, device) of each entry with layers."""
        out, start = [], 0
        for e in self.entries:
            if e.count:
                out.append((start, start + e.count, e.device))
            start += e.count
        return out

    def segment_kernels(self) -> list[str]:
        """The kernels each segment's layers bind, in the order of `segments`."""
        return [site_kernels(e.device, e.kernels) for e in self.entries if e.count]

    def layer_devices(self) -> list[torch.device]:
        return [device for start, end, device in self.segments() for _ in range(start, end)]

    @property
    def devices(self) -> set[torch.device]:
        return {e.device for e in self.entries if e.count} | {self.head, self.embed}

    def check_layers(self, num_layers: int) -> None:
        if self.num_layers != num_layers:
            counts = " + ".join(str(e.count) for e in self.entries)
            raise InvalidRequestError(
                f"device_layers places {counts} = {self.num_layers} layers; the model has {num_layers}"
            )


def site_kernels(device: torch.device, kernels: str = "") -> str:
    """A device's kernels: the C++ ones on the CPU, Triton's on CUDA (the native ones read CPU memory only)."""
    if device.type == "cuda" and kernels not in ("", "triton"):
        raise InvalidRequestError(f"{device} runs the Triton kernels; {kernels!r} runs on the CPU only")
    return kernels or ("triton" if device.type == "cuda" else "native")


def parse_device_layers(text: str, cuda_count: Callable[[], int] = torch.cuda.device_count) -> DeviceMap:
    """`"cuda:0:20;cpu:10"` -> a DeviceMap (the layer total is checked against the model by `check_layers`)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError(f"device_layers must be a non-empty string like 'cuda:0:20;cpu:10', got {text!r}")
    entries = []
    for part in text.split(";"):
        device, sep, count = part.strip().rpartition(":")
        if not sep or not device:
            raise InvalidRequestError(f"device_layers entry {part.strip()!r} is not DEVICE:COUNT (e.g. cuda:0:20)")
        entries.append(DeviceEntry(parse_device(device, cuda_count), _count(count, part)))
    return DeviceMap(tuple(entries), head=entries[-1].device)


def n_gpu_layers_map(n: int, num_layers: int, cuda_count: Callable[[], int] = torch.cuda.device_count) -> DeviceMap:
    """llama.cpp's `-ngl n` over `num_layers` decoder layers (see the module's docstring)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InvalidRequestError(f"n_gpu_layers must be a non-negative integer, got {n!r}")
    gpu = parse_device("cuda:0", cuda_count) if n else CPU
    on_gpu = max(0, min(n - 1, num_layers))  # the first offloaded slot is the output
    entries = (DeviceEntry(CPU, num_layers - on_gpu), DeviceEntry(gpu, on_gpu))
    return DeviceMap(tuple(e for e in entries if e.count), head=gpu)


def parse_device(text: str, cuda_count: Callable[[], int] = torch.cuda.device_count) -> torch.device:
    name = text.strip().lower()
    if name == "cpu":
        return CPU
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise InvalidRequestError(f"unknown device {text!r}; use cpu, cuda or cuda:N")
    ordinal = int(index) if index else 0
    available = cuda_count()
    if available == 0:
        raise InvalidRequestError(f"device {text!r} needs CUDA, and torch sees no CUDA device here")
    if ordinal >= available:
        raise InvalidRequestError(f"device {text!r} does not exist: torch sees {available} CUDA device(s)")
    return torch.device("cuda", ordinal)


def _count(text: str, part: str) -> int:
    if not text.strip().isdigit():
        raise InvalidRequestError(f"device_layers entry {part.strip()!r}: the layer count must be an integer >= 0")
    return int(text)


def resolve_device_map(
    device_layers: str | None,
    n_gpu_layers: int | None,
    num_layers: int,
    cuda_count: Callable[[], int] = torch.cuda.device_count,
) -> DeviceMap | None:
    """The engine's map for a model of `num_layers` layers, or None (everything on the engine's device)."""
    if device_layers is not None and n_gpu_layers is not None:
        raise InvalidRequestError("give device_layers or n_gpu_layers, not both")
    if device_layers is not None:
        dmap = parse_device_layers(device_layers, cuda_count)
        dmap.check_layers(num_layers)
        return dmap
    if n_gpu_layers is not None:
        return n_gpu_layers_map(n_gpu_layers, num_layers, cuda_count)
    return None


def check_device_map_options(device_layers: object, n_gpu_layers: object) -> None:
    """EngineConfig's early check: syntax, devices and exclusivity (the layer total needs the model)."""
    if device_layers is not None and n_gpu_layers is not None:
        raise InvalidRequestError("give device_layers or n_gpu_layers, not both")
    if device_layers is not None:
        parse_device_layers(device_layers)  # type: ignore[arg-type]
    if n_gpu_layers is not None:
        n_gpu_layers_map(n_gpu_layers, 0)  # type: ignore[arg-type]
