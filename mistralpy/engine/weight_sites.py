"""WeightSites: where the loader puts each weight as it reads it, and which kernels its module is built for.

Without it the loader builds the whole model in host memory and the runner moves it afterwards: on a GPU that holds
every weight twice for a while, and a GGUF layer of a device map built for the CPU's native kernels cannot move to
a GPU at all. With it, each weight goes to its device as soon as it is read (host memory holds one tensor at a
time), and a GGUF layer whose site is a GPU keeps its blocks for the Triton matmuls (llama.cpp's `-ngl` keeps
offloaded layers quantized too). The sites follow LayerPlacement's rules: a decoder layer on its entry's device,
the input embeddings on the map's `embed` (the head's when the table is tied), everything else (final norm, LM head)
with the head."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch

from ..device import Placement
from .device_map import CPU, DeviceMap, resolve_device_map, site_kernels

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Site:
    device: torch.device
    kernels: str  # "native" or "triton" (device.py's kernel names)


@dataclass(frozen=True)
class WeightSites:
    layers: tuple[Site, ...]
    embed: Site
    head: Site

    def site(self, module_name: str) -> Site:
        """The site of a module, by its Hugging Face name (model.layers.N..., model.embed_tokens, lm_head...)."""
        m = _LAYER.match(module_name)
        if m is not None:
            return self.layers[int(m.group(1))]
        return self.embed if module_name == "model.embed_tokens" else self.head

    @property
    def any_triton(self) -> bool:
        return any(s.kernels == "triton" for s in (*self.layers, self.embed, self.head))

    def off_host(self) -> WeightSites | None:
        """These sites, or None where every one is the CPU's native kernels in host memory (the loader's default)."""
        host = Site(CPU, "native")
        return None if all(s == host for s in (*self.layers, self.embed, self.head)) else self

    def on_host(self) -> WeightSites:
        """The same kernels with every weight in host memory (an adapter merge changes weights before they move)."""

        def host(s: Site) -> Site:
            return replace(s, device=CPU)

        return WeightSites(tuple(map(host, self.layers)), host(self.embed), host(self.head))

    @classmethod
    def from_map(cls, dmap: DeviceMap, tied: bool) -> WeightSites:
        layers = [
            Site(device, kernels)
            for (start, end, device), kernels in zip(dmap.segments(), dmap.segment_kernels(), strict=True)
            for _ in range(start, end)
        ]
        head = Site(dmap.head, site_kernels(dmap.head, dmap.head_kernels))
        return cls(tuple(layers), head if tied else Site(dmap.embed, site_kernels(dmap.embed)), head)

    @classmethod
    def single(cls, placement: Placement, num_layers: int) -> WeightSites:
        site = Site(placement.device, placement.kernels)
        return cls((site,) * num_layers, site, site)


def weight_sites(config, placement: Placement, model_config) -> WeightSites | None:
    """The engine's sites, or None where everything stays in host memory for the CPU's kernels (today's path, no
    cost): a CPU engine, or a device map whose entries are all the CPU."""
    n = model_config.num_hidden_layers
    dmap = resolve_device_map(config.device_layers, config.n_gpu_layers, n)
    placed = (
        WeightSites.single(placement, n)
        if dmap is None
        else WeightSites.from_map(dmap, model_config.tie_word_embeddings)
    )
    sites = placed.off_host()
    return sites.on_host() if sites is not None and config.lora_merge else sites


def kv_kernels(sites: WeightSites | None, placement: Placement) -> str:
    """The kernels the KV pools' rows are laid out for: Triton's (compute-dtype rows) where any part of the model
    runs them, as every pool has one format."""
    return "triton" if sites is not None and sites.any_triton else placement.kernels
