"""Which adapters a request runs with, in every API's way: vLLM's (`model` names an adapter), mistral.rs's (an
`adapters` list of names: all of them at once, their deltas added, as mistral.rs activates them), or the adapters
active by default (an ordering file's `order`). Several adapters become one combined LoRARequest whose weights are
their sum (combine.py); each distinct combination gets its own id, far above the ids of named adapters."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError, UnknownModelError
from .adapter import LoRAAdapter, read_adapter
from .combine import combine_adapters
from .request import LoRARequest

COMBINED_IDS_START = 1 << 30


class UnknownAdapterError(UnknownModelError):
    """A request's `adapters` names an adapter this server does not have (HTTP 404)."""

    def __init__(self, name: str, known: list[str]) -> None:
        InvalidRequestError.__init__(self, f"the adapter '{name}' does not exist; adapters: {known}")
        self.name, self.served = name, ", ".join(known)


@dataclass(frozen=True)
class CombinedLoRARequest(LoRARequest):
    parts: tuple[LoRARequest, ...] = ()


def read_request(request: LoRARequest) -> LoRAAdapter:
    """The adapter a request runs with: one folder's, or the sum of a combination's."""
    if isinstance(request, CombinedLoRARequest):
        return combine_adapters([(read_adapter(p.lora_path), 1.0) for p in request.parts])
    return read_adapter(request.lora_path)


class AdapterSelector:
    def __init__(self) -> None:
        self._combined: dict[tuple[tuple[str, str], ...], CombinedLoRARequest] = {}
        self._ids = itertools.count(COMBINED_IDS_START)

    def select(
        self, modules: dict[str, LoRARequest], model: str | None, adapters: list[str] | None, default: tuple[str, ...]
    ) -> LoRARequest | None:
        """`model`: the request's model when it names an adapter (else None); `adapters`: its `adapters` field."""
        if adapters is not None and model is not None:
            raise InvalidRequestError(
                f"the request names adapter {model!r} as its model and adapters {adapters}: use one or the other"
            )
        if model is not None:
            return modules[model]
        names = default if adapters is None else adapters
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise UnknownAdapterError(unknown[0], list(modules))
        if len(set(names)) != len(names):
            raise InvalidRequestError(f"adapters names an adapter twice: {list(names)}")
        if not names:
            return None
        if len(names) == 1:
            return modules[names[0]]
        return self._combination([modules[n] for n in names])

    def _combination(self, parts: list[LoRARequest]) -> CombinedLoRARequest:
        key = tuple(sorted((p.lora_name, p.lora_path) for p in parts))
        if key not in self._combined:
            name = "+".join(n for n, _ in key)
            path = "+".join(str(Path(p)) for _, p in key)
            ordered = tuple(sorted(parts, key=lambda p: (p.lora_name, p.lora_path)))
            self._combined[key] = CombinedLoRARequest(name, next(self._ids), path, ordered)
        return self._combined[key]
