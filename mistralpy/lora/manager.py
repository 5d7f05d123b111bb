"""LoRAManager: a model's linears wrapped as LoRALinear, and the adapters loaded into their `max_loras` slots.

A request's adapter gets a slot when the request is added: the slot it already has, a free one, or the least recently
used slot that no unfinished request uses (that adapter is unloaded). With `max_total_rank`, idle adapters are also
unloaded, least recently used first, until the loaded ranks plus the new one fit. Adapter identity (its files'
digest) keys the prefix cache, so equal prompts under different adapters never share K/V.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from ..config import check_lora_limits
from ..errors import InvalidRequestError, LoRAAdapterError
from .adapter import LoRAAdapter
from .layer import LoRALinear, LoRAState, LoRAStep
from .projections import _inside_quantized, projection_layers  # noqa: F401 (lora/xlora imports it from here)
from .request import LoRARequest
from .selection import read_request
from .targets import map_adapter


@dataclass
class LoadedAdapter:
    request: LoRARequest
    adapter: LoRAAdapter
    last_used: int


class LoRAManager:
    def __init__(
        self,
        model: nn.Module,
        max_loras: int,
        max_lora_rank: int,
        dtype: torch.dtype,
        max_total_rank: int | None = None,
    ) -> None:
        check_lora_limits(True, max_loras, max_lora_rank, max_total_rank)
        self.model, self.max_loras, self.max_lora_rank = model, max_loras, max_lora_rank
        self.max_total_rank = max_total_rank
        self.state = LoRAState()
        self.layers = wrap_linears(model, max_loras, max_lora_rank, dtype, self.state)
        self.slots: list[LoadedAdapter | None] = [None] * max_loras
        self._clock = itertools.count()

    def acquire(self, request: LoRARequest, busy: set[int]) -> int:
        """The slot holding `request`'s adapter, loading it if needed; `busy`: slots of unfinished requests."""
        slot = self.slot_of(request.lora_int_id)
        if slot is not None:
            loaded = self.slots[slot]
            if loaded.request.lora_path != request.lora_path:
                raise InvalidRequestError(
                    f"lora_int_id {request.lora_int_id} is loaded from {loaded.request.lora_path}, "
                    f"not {request.lora_path}"
                )
            loaded.last_used = next(self._clock)
            return slot
        adapter = self.read(request)
        slot = self._make_room(adapter.rank, busy)
        self.load(slot, request, adapter)
        return slot

    def read(self, request: LoRARequest) -> LoRAAdapter:
        """The adapter's files read and checked against this model, before any slot changes."""
        adapter = read_request(request)
        if adapter.rank > self.max_lora_rank:
            raise LoRAAdapterError(f"{adapter.path}: rank {adapter.rank} exceeds max_lora_rank {self.max_lora_rank}")
        if self.max_total_rank is not None and adapter.rank > self.max_total_rank:
            raise LoRAAdapterError(
                f"{adapter.path}: rank {adapter.rank} exceeds max_lora_total_rank {self.max_total_rank}"
            )
        map_adapter(adapter, self.model, self.layers)
        return adapter

    def load(self, slot: int, request: LoRARequest, adapter: LoRAAdapter) -> None:
        targets = map_adapter(adapter, self.model, self.layers)
        for name, layer in self.layers.items():
            parts = [(p.row_offset, p.weights.a, p.weights.b * p.weights.scale) for p in targets.get(name, [])]
            layer.set_slot(slot, parts)
        self.slots[slot] = LoadedAdapter(request, adapter, next(self._clock))

    def unload(self, lora_int_id: int, busy: set[int]) -> None:
        slot = self.slot_of(lora_int_id)
        if slot is None:
            raise InvalidRequestError(f"no LoRA adapter with id {lora_int_id} is loaded")
        if slot in busy:
            raise InvalidRequestError(f"LoRA adapter {lora_int_id} is in use by unfinished requests")
        self._evict(slot)

    def total_rank(self) -> int:
        return sum(s.adapter.rank for s in self.slots if s is not None)

    def slot_of(self, lora_int_id: int) -> int | None:
        ids = [None if s is None else s.request.lora_int_id for s in self.slots]
        return ids.index(lora_int_id) if lora_int_id in ids else None

    def digest(self, slot: int) -> bytes:
        return self.slots[slot].adapter.digest

    def loaded(self) -> list[LoRARequest]:
        return [s.request for s in self.slots if s is not None]

    def begin_step(self, slots: list[int]) -> None:
        self.state.step = LoRAStep.from_slots(slots, self.state.device)

    def end_step(self) -> None:
        self.state.step = None

    @property
    def adapters_active(self) -> bool:
        """Whether this step has adapter tokens the native DecoderStack cannot run: none, it runs LoRA layers too."""
        return False

    def _make_room(self, rank: int, busy: set[int]) -> int:
        """A free slot with room for `rank` under max_total_rank, unloading idle adapters (LRU first) for it."""
        limit = self.max_total_rank
        while True:
            free = [i for i, s in enumerate(self.slots) if s is None]
            fits = limit is None or self.total_rank() + rank <= limit
            if free and fits:
                return free[0]
            idle = [i for i, s in enumerate(self.slots) if s is not None and i not in busy]
            if not idle:
                raise InvalidRequestError(self._no_room(rank, bool(free)))
            self._evict(min(idle, key=lambda i: self.slots[i].last_used))

    def _no_room(self, rank: int, slot_free: bool) -> str:
        if slot_free:
            return (
                f"a LoRA adapter of rank {rank} does not fit: the adapters of unfinished requests hold a total rank of "
                f"{self.total_rank()} of max_lora_total_rank {self.max_total_rank}; retry later or raise "
                "max_lora_total_rank"
            )
        return (
            f"all {self.max_loras} LoRA slots (max_loras) hold adapters of unfinished requests; retry later or raise "
            "max_loras"
        )

    def _evict(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.clear_slot(slot)
        self.slots[slot] = None


def wrap_linears(
    model: nn.Module, max_loras: int, max_rank: int, dtype: torch.dtype, state: LoRAState
) -> dict[str, LoRALinear]:
    """Every projection of the decoder layers wrapped in place; a fused linear's rank room is one rank per part."""
    parts = {}
    for target, _ in type(model).fused.values():
        parts[target] = parts.get(target, 0) + 1
    layers = {}
    for name, base in projection_layers(model).items():
        parent_name, _, leaf = name.rpartition(".")
        layer = LoRALinear(base, max_loras, max_rank * parts.get(leaf, 1), dtype, state)
        setattr(model.get_submodule(parent_name), leaf, layer)
        layers[name] = layer
    return layers
