"""mistral.rs's adapter ordering file (docs/ADAPTER_MODELS.md there), for LoRA:

    {"base_model_id": "...", "order": ["a", "b"], "layers": {...},
     "preload_adapters": [{"name": "c", "adapter_model_id": "path"}]}

- `order`: the adapters activated from the start, each a PEFT folder `<adapters_model_id>/<name>`; requests that
  name no adapter run with all of them at once (their deltas add). Absent: the base model.
- `preload_adapters`: more adapters, loadable by name (a request's `adapters` field) but not active by default.
- `base_model_id`: the base model's id; mistralpy uses it where a local folder is needed and none is given (the
  tokenizer of Which.LoraGGUF / the model of Which.Lora), as mistral.rs does with a hub id.
- `layers`: X-LoRA's scalings index per module; LoRA has no use for it (nor has mistral.rs): checked only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidRequestError, ModelNotFoundError
from .request import LoRARequest


@dataclass(frozen=True)
class AdapterSet:
    """Adapters by name (ids 1, 2, ... in order) and the names active when a request names none."""

    modules: dict[str, LoRARequest] = field(default_factory=dict)
    default: tuple[str, ...] = ()

    def engine_options(self) -> dict[str, object]:
        """EngineConfig keyword arguments with room for any combination of these adapters (ranks summed)."""
        ranks = [_rank(Path(r.lora_path)) for r in self.modules.values()]
        return {"enable_lora": True, "max_loras": max(4, len(ranks) + 1), "max_lora_rank": max(1, sum(ranks))}

    @classmethod
    def of_folders(cls, folders: list[str | Path]) -> AdapterSet:
        """Every folder an adapter named after it, all active by default (Which.Lora)."""
        modules: dict[str, LoRARequest] = {}
        for folder in folders:
            _add(modules, Path(folder).name, Path(folder))
        return cls(modules, tuple(modules))


@dataclass(frozen=True)
class Ordering:
    base_model_id: str
    order: tuple[str, ...] | None
    preload: tuple[tuple[str, str], ...]
    layers: dict[str, int] | None

    def adapters(self, adapters_model_id: str | Path) -> AdapterSet:
        root = Path(adapters_model_id).expanduser()
        if self.order and not root.is_dir():
            raise ModelNotFoundError(f"adapters_model_id {root} is not a folder of adapters")
        modules: dict[str, LoRARequest] = {}
        for name in self.order or ():
            _add(modules, name, root / name)
        for name, path in self.preload:
            _add(modules, name, Path(path).expanduser())
        return AdapterSet(modules, self.order or ())


def read_ordering(path: str | Path) -> Ordering:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelNotFoundError(f"adapter ordering file not found: {file}")
    try:
        data = json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequestError(f"ordering file {file} is not valid JSON: {e}") from None
    where = f"ordering file {file}"
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{where} must hold a JSON object")
    unknown = set(data) - {"base_model_id", "order", "layers", "preload_adapters"}
    if unknown:
        raise InvalidRequestError(f"{where}: unknown keys {sorted(unknown)}")
    base = data.get("base_model_id")
    if not isinstance(base, str):
        raise InvalidRequestError(f"{where}: base_model_id must be a string, got {base!r}")
    order = data.get("order")
    if order is not None and (not isinstance(order, list) or not all(isinstance(n, str) and n for n in order)):
        raise InvalidRequestError(f"{where}: order must be a list of adapter names, got {order!r}")
    layers = data.get("layers")
    if layers is not None and not (
        isinstance(layers, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in layers.values())
    ):
        raise InvalidRequestError(f"{where}: layers must map module names to layer indices")
    preload = _preload(data.get("preload_adapters"), where)
    return Ordering(base, None if order is None else tuple(order), preload, layers)


def _preload(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    shape = 'a list of {"name": ..., "adapter_model_id": ...}'
    if not isinstance(value, list):
        raise InvalidRequestError(f"{where}: preload_adapters must be {shape}")
    out = []
    for item in value:
        ok = isinstance(item, dict) and set(item) == {"name", "adapter_model_id"}
        if not ok or not all(isinstance(v, str) and v for v in item.values()):
            raise InvalidRequestError(f"{where}: preload_adapters must be {shape}, got {item!r}")
        out.append((item["name"], item["adapter_model_id"]))
    return tuple(out)


def _rank(folder: Path) -> int:
    """The adapter's r (a bad file is reported in full when the adapter is read)."""
    try:
        r = json.loads((folder / "adapter_config.json").read_bytes()).get("r")
    except (OSError, ValueError, AttributeError):
        return 0
    return r if isinstance(r, int) and not isinstance(r, bool) and r > 0 else 0


def _add(modules: dict[str, LoRARequest], name: str, folder: Path) -> None:
    if name in modules:
        raise InvalidRequestError(f"adapter name {name!r} is given twice")
    if not (folder / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"adapter {name!r}: no adapter_config.json in {folder}")
    modules[name] = LoRARequest(name, len(modules) + 1, str(folder))
