"""The models a server serves: `-m A -m B` (names from --served-model-name, given once a model, else the files'
names) or `--config models.toml` (each model's name, path, dtype, ISQ, context, KV share, template and adapters).
The server's KV budget (--kv-cache-tokens, or the file's `kv_cache_tokens`) is split among the models by their
`kv_cache_share` (equal by default); a model may instead fix its own `kv_cache_tokens`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..chat_template import read_chat_template
from ..config import EngineConfig
from ..errors import InvalidRequestError
from ..lora.request import LoRARequest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# What one [[models]] entry may set, and the EngineConfig field each becomes.
ENTRY_FIELDS = {
    "name": None, "model": "model", "dtype": "dtype", "isq": "quantization", "max_model_len": "max_model_len",
    "kv_cache_tokens": "kv_cache_tokens", "kv_cache_share": None, "kv_cache_dtype": "kv_cache_dtype",
    "chat_template": "chat_template", "task": "task", "pooling": "pooling", "max_num_seqs": "max_num_seqs",
    "generation_config": "generation_config", "lora": None,
}  # fmt: skip
FILE_FIELDS = {"models", "default_model", "kv_cache_tokens"}


@dataclass
class ServedModel:
    name: str
    config: EngineConfig
    lora_modules: dict[str, LoRARequest]


def served_models(args: argparse.Namespace, base: EngineConfig, adapters: dict[str, LoRARequest]) -> tuple[
    list[ServedModel], str | None
]:  # fmt: skip
    """The models and the default one's name (None: the first). `adapters` (--lora) go to the default model."""
    if args.config is not None:
        if args.model or args.served_model_name:
            raise InvalidRequestError("--config names the models: give no -m or --served-model-name with it")
        models, default = _from_file(Path(args.config), base)
    else:
        models, default = _from_flags(args, base), None
    first = next((m for m in models if m.name == default), models[0])
    for name in adapters:
        if any(name == m.name for m in models):
            raise InvalidRequestError(f"--lora name {name!r} is also a model's name")
    first.lora_modules.update(adapters)
    return models, default


def _from_flags(args: argparse.Namespace, base: EngineConfig) -> list[ServedModel]:
    paths: list[str | None] = args.model or [None]
    names = args.served_model_name or []
    if len(paths) == 1:
        names = names or ["default"]
    elif not names:
        names = [_stem(p) for p in paths]
    if len(names) != len(paths):
        raise InvalidRequestError(f"--served-model-name is given {len(names)} times for {len(paths)} models (-m)")
    configs = [dataclasses.replace(base, model=p) for p in paths]
    return _named(names, _split_kv(configs, [1.0] * len(configs), base.kv_cache_tokens))


def _from_file(path: Path, base: EngineConfig) -> tuple[list[ServedModel], str | None]:
    doc = _read(path)
    unknown = set(doc) - FILE_FIELDS
    if unknown:
        raise InvalidRequestError(f"{path}: unknown keys {sorted(unknown)}; a file has {sorted(FILE_FIELDS)}")
    entries = doc.get("models")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise InvalidRequestError(f"{path}: 'models' must be a non-empty list of tables ([[models]])")
    configs, shares, names, loras = [], [], [], []
    for i, entry in enumerate(entries):
        where = f"{path}: models[{i}]"
        unknown = set(entry) - set(ENTRY_FIELDS)
        if unknown:
            raise InvalidRequestError(f"{where}: unknown keys {sorted(unknown)}; an entry has {sorted(ENTRY_FIELDS)}")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise InvalidRequestError(f"{where}: 'name' (the model id clients send) is required")
        fields = {ENTRY_FIELDS[k]: v for k, v in entry.items() if ENTRY_FIELDS[k] is not None}
        if "chat_template" in fields:
            fields["chat_template"] = read_chat_template(str(path.parent / fields["chat_template"]))
        if "model" in fields:
            fields["model"] = str(path.parent / fields["model"])  # relative to the file
        try:
            configs.append(dataclasses.replace(base, **fields))
        except TypeError as e:
            raise InvalidRequestError(f"{where}: {e}") from None
        shares.append(_share(entry, where))
        names.append(entry["name"])
        loras.append(_adapters(entry.get("lora", {}), path, where))
    total = doc.get("kv_cache_tokens", base.kv_cache_tokens)
    fixed = ["kv_cache_tokens" in e for e in entries]
    models = _named(names, _split_kv(configs, shares, total, fixed))
    for model, adapters in zip(models, loras, strict=True):
        model.lora_modules.update(adapters)
    default = doc.get("default_model")
    if default is not None and default not in names:
        raise InvalidRequestError(f"{path}: default_model {default!r} is not among the models {names}")
    return models, default


def _split_kv(
    configs: list[EngineConfig], shares: list[float], total: int, fixed: list[bool] | None = None
) -> list[EngineConfig]:
    """The models that fix no KV budget split what the others leave of `total`, by their shares."""
    fixed = fixed or [False] * len(configs)
    left = total - sum(c.kv_cache_tokens for c, f in zip(configs, fixed, strict=True) if f)
    weight = sum(s for s, f in zip(shares, fixed, strict=True) if not f)
    out = []
    for config, share, own in zip(configs, shares, fixed, strict=True):
        tokens = config.kv_cache_tokens if own else int(left * share / weight)
        if tokens < config.block_size:
            raise InvalidRequestError(
                f"the KV budget of {total} tokens leaves {tokens} to a model: raise --kv-cache-tokens"
            )
        out.append(dataclasses.replace(config, kv_cache_tokens=tokens))
    return out


def _named(names: list[str], configs: list[EngineConfig]) -> list[ServedModel]:
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise InvalidRequestError(f"the model name {sorted(duplicates)[0]!r} is used twice")
    return [ServedModel(n, c, {}) for n, c in zip(names, configs, strict=True)]


def _share(entry: dict[str, Any], where: str) -> float:
    share = entry.get("kv_cache_share", 1.0)
    if "kv_cache_share" in entry and "kv_cache_tokens" in entry:
        raise InvalidRequestError(f"{where}: give kv_cache_tokens or kv_cache_share, not both")
    if isinstance(share, bool) or not isinstance(share, int | float) or not share > 0:
        raise InvalidRequestError(f"{where}: kv_cache_share must be a number > 0, got {share!r}")
    return float(share)


def _adapters(table: Any, path: Path, where: str) -> dict[str, LoRARequest]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise InvalidRequestError(f"{where}: 'lora' must be a table of adapter name = folder path")
    return {name: LoRARequest(name, i + 1, str(path.parent / p)) for i, (name, p) in enumerate(table.items())}


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidRequestError(f"cannot read the models file {path}: {e.strerror}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise InvalidRequestError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None


def _stem(path: str | None) -> str:
    return "default" if path is None else Path(path).name.removesuffix(".gguf").removesuffix(".bin")
