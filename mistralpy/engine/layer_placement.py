"""LayerPlacement: a loaded model's decoder layers put on the devices of a DeviceMap, with the moves at the boundaries.

Each entry of the map is a segment: its layers' weights on its device, its own KV pool there (the block tables are
the same for every pool: a block id means the same slots in each), and a forward pre-hook on its first layer that
moves what crosses into it: the hidden state (the residual stream; the layers add their residual inside), the
positions and the attention metadata (slot mapping, block tables, context lengths; one copy per device and step).
The input embeddings and the head (final norm + LM head) get the same hooks. Layers on the CPU keep the native
kernels; on another device their norms, rotary and attention run torch's paths (no CPU kernel in the metadata).
Modules the layers share (the rotary tables) are copied once per other device. Moves are recorded (`moves`), so a
map whose entries are all on the CPU shows where the boundaries are on a machine with one device.
The native DecoderStack runs the whole stack on the CPU: it stays on only for a one-segment CPU map.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import InvalidRequestError
from ..layers.attention import AttentionMetadata
from ..layers.kv_cache import cache_shape, storage_dtype
from ..layers.native import NativeLayer
from ..layers.rotary import RotaryEmbedding
from ..quant.native_linear import NativeQuantLinear
from .device_map import CPU, DeviceMap, resolve_device_map, site_kernels


@dataclass
class Move:
    site: str  # "embed", "layer N" (the first layer of a segment) or "head"
    device: torch.device


@dataclass
class LayerPlacement:
    dmap: DeviceMap
    host: torch.device = CPU  # where the runner reads logits and hidden states
    moves: list[Move] = field(default_factory=list)
    record_moves: bool = False
    _meta_src: AttentionMetadata | None = None
    _meta_copies: dict = field(default_factory=dict)
    pools: list[torch.Tensor] = field(default_factory=list)  # the KV pools, one a segment (kv_pools)

    def apply(self, model: nn.Module) -> None:
        """Weights onto their devices, each segment's kernels bound, and the boundary hooks in place (after
        `bind_native`, whose binding the CPU's native segments keep)."""
        inner = _decoder(model)
        layers = list(inner.layers)
        self.dmap.check_layers(len(layers))
        segments = list(zip(self.dmap.segments(), self.dmap.segment_kernels(), strict=True))
        sites = [(device, kernels) for (start, end, device), kernels in segments for _ in range(start, end)]
        _unshare(layers, sites, home=(CPU, "native"))
        for (start, end, device), kernels in segments:
            for layer in layers[start:end]:
                _move_layer(layer, device, kernels)
        tied = getattr(model, "lm_head", None) is None
        embed_device = self.dmap.head if tied else self.dmap.embed
        inner.embed_tokens.to(embed_device)
        self._hook(inner.embed_tokens, "embed", embed_device)
        for (start, _, device), kernels in segments:
            self._hook(layers[start], f"layer {start}", device, kernels)
        head, head_kernels = _final_norm(inner), site_kernels(self.dmap.head, self.dmap.head_kernels)
        _move_layer(head, self.dmap.head, head_kernels)
        if not tied:
            model.lm_head.to(self.dmap.head)
        self._hook(head, "head", self.dmap.head, head_kernels)
        if len(self.dmap.segments()) > 1 or self.dmap.devices != {CPU} or {k for _, k in segments} != {"native"}:
            inner.stack_allowed = False

    def kv_pools(self, num_blocks: int, block_size: int, cfg, kv_cache_dtype: str, dtype: torch.dtype, cpu_zeros):
        """One pool a segment, on its device: (layers, 2, blocks, block_size, Hkv, row) each."""
        pools, rows = [], storage_dtype(dtype, kv_cache_dtype)
        for start, end, device in self.dmap.segments():
            kv = (cfg.num_key_value_heads, cfg.head_dim, kv_cache_dtype)
            shape = cache_shape(end - start, num_blocks, block_size, *kv)
            pools.append(cpu_zeros(shape, rows) if device == CPU else torch.zeros(shape, dtype=rows, device=device))
        self.pools = pools
        return pools

    def to_host(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.host)

    def _hook(self, module: nn.Module, site: str, device: torch.device, kernels: str = "native") -> None:
        def move_inputs(_module, args, kwargs):
            if self.record_moves:
                self.moves.append(Move(site, device))
            moved = {k: self._to(v, device, kernels) for k, v in kwargs.items()}
            return tuple(self._to(a, device, kernels) for a in args), moved

        module.register_forward_pre_hook(move_inputs, with_kwargs=True)

    def _to(self, value, device: torch.device, kernels: str):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, AttentionMetadata):
            return self._meta_on(value, device, kernels)
        return value

    def _meta_on(self, meta: AttentionMetadata, device: torch.device, kernels: str) -> AttentionMetadata:
        if meta.slot_mapping.device == device and device == CPU and kernels == "native":
            return meta
        if meta is not self._meta_src:  # a new step: the copies of the last one are stale
            self._meta_src, self._meta_copies = meta, {}
        if (device, kernels) not in self._meta_copies:
            self._meta_copies[device, kernels] = meta_on(meta, device, kernel_set(device, kernels))
        return self._meta_copies[device, kernels]


def placement_for(model: nn.Module, config) -> LayerPlacement | None:
    """The model placed by the EngineConfig's device_layers / n_gpu_layers, or None where it gives neither."""
    if config is None:
        return None
    dmap = resolve_device_map(config.device_layers, config.n_gpu_layers, model.config.num_hidden_layers)
    if dmap is None:
        return None
    placement = LayerPlacement(dmap)
    placement.apply(model)
    return placement


def meta_on(meta: AttentionMetadata, device: torch.device, kernels=None) -> AttentionMetadata:
    """The step's metadata with its tensors on `device` and the attention kernels of `kernels` (a kernel set: the
    Triton one of a GPU segment); without one, the native kernels kept on the CPU only (torch's paths elsewhere)."""

    def to(t):
        return None if t is None else t.to(device)

    if kernels is not None:
        write, decode, prefill = kernels.write_kv, kernels.decode_attention, kernels.prefill_attention
    elif device == CPU:
        write, decode, prefill = meta.write_kernel, meta.decode_kernel, meta.prefill_kernel
    else:
        write = decode = prefill = None
    return replace(
        meta,
        slot_mapping=to(meta.slot_mapping),
        decode_block_tables=to(meta.decode_block_tables),
        decode_lens=to(meta.decode_lens),
        prompt_lens=to(meta.prompt_lens),
        prefills=[replace(p, block_table=to(p.block_table)) for p in meta.prefills],
        write_kernel=write,
        decode_kernel=decode,
        prefill_kernel=prefill,
        _masks={},
    )


def kernel_set(device: torch.device, kernels: str):
    """What a segment's layers and attention call: the Triton kernel set, or None for the native kernels (the
    runner's binding on the CPU; torch's paths on a device they cannot read)."""
    if kernels != "triton":
        return None
    from ..device import Placement, kernel_module

    return kernel_module(Placement(device, "triton"))


def _decoder(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", None)
    if not all(hasattr(inner, a) for a in ("layers", "embed_tokens")) or not hasattr(model, "compute_logits"):
        raise InvalidRequestError(
            f"device_layers / n_gpu_layers: {type(model).__name__} is not a decoder model with model.layers"
        )
    return inner


def _final_norm(inner: nn.Module) -> nn.Module:
    for name in ("norm", "final_layernorm"):
        if isinstance(getattr(inner, name, None), nn.Module):
            return getattr(inner, name)
    raise InvalidRequestError(f"device_layers: {type(inner).__name__} has no final norm this placement knows")


def _move_layer(layer: nn.Module, device: torch.device, kernels: str = "native") -> None:
    """A layer's weights onto `device` and its norms / rotary / SiLU bound to the segment's kernels."""
    native = [type(m).__name__ for m in layer.modules() if isinstance(m, NativeQuantLinear)]
    if native and (device != CPU or kernels != "native"):
        raise InvalidRequestError(
            f"{native[0]} weights run on the CPU's native kernel only and cannot be placed on {device} "
            f"({kernels} kernels); load with weights='dequantized' to offload them"
        )
    if device != CPU or kernels != "native":
        bound = kernel_set(device, kernels)
        for m in layer.modules():
            if isinstance(m, NativeLayer):
                m.native = bound  # the native norms / rotary / SiLU kernels take CPU tensors only
    layer.to(device)
    for m in layer.modules():  # the cos/sin tables are plain attributes, not buffers: .to() leaves them behind
        if isinstance(m, RotaryEmbedding) and m.cos is not None and m.cos.device != device:
            m.build_cache(device)
    stray = [n for n, t in [*layer.named_parameters(), *layer.named_buffers()] if t.device != device]
    if stray:
        raise InvalidRequestError(f"a layer's {stray[0]} could not be placed on {device}")


def _unshare(layers: list[nn.Module], devices: list, home=CPU) -> None:
    """A module several layers hold (the rotary) becomes one copy per device (or site: device and kernels) other
    than `home`, the original's: moving or binding one layer must not move or rebind another's tables."""
    holders: dict[int, list[tuple[int, nn.Module, str, nn.Module]]] = {}
    for i, layer in enumerate(layers):
        for parent in layer.modules():
            for name, child in parent.named_children():
                holders.setdefault(id(child), []).append((i, parent, name, child))
    shared = {key for key, held in holders.items() if len({i for i, *_ in held}) > 1}
    for key in shared:
        copies: dict[torch.device, nn.Module] = {}
        for i, parent, name, child in holders[key]:
            if id(parent) in shared or devices[i] == home:
                continue  # inside a shared module that is copied whole, or the original's device
            if devices[i] not in copies:
                # the bound kernels module is shared, not copied (a module cannot be)
                kernels = {id(m.native): m.native for m in child.modules() if isinstance(m, NativeLayer)}
                copies[devices[i]] = copy.deepcopy(child, memo=kernels)
            setattr(parent, name, copies[devices[i]])
