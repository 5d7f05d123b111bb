"""AnyMoeConfig: the experts, the training set and the training of the gates, in the spirit of mistral.rs's AnyMoE
config (its TOML selector's `[anymoe]` table: dataset_json, model_ids, layers, and `[anymoe.config]`: lr, epochs,
batch_size, expert_type, gate_model_id, loss_csv_path).

Expert 0 is the base model's own MLP; expert k (k >= 1) is `model_ids[k - 1]`: a fine-tuned model's folder (its MLP
weights, `expert_type="fine_tuned"`) or a PEFT LoRA adapter on the MLP projections (`expert_type="lora_adapter"`).
`gate_model_id`: a folder for the trained gates: read from it when it holds gates, else the gates are trained and
written there (training runs once). `hidden_size`, `prefix` and `mlp` of mistral.rs's config are read from the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from ...errors import InvalidRequestError

EXPERT_TYPES = ("fine_tuned", "lora_adapter")


@dataclass(frozen=True)
class AnyMoeConfig:
    model_ids: list[str]
    dataset_json: str | None = None  # {"rows": [{"prompt": ..., "expert": k}, ...]} (mistral.rs's format)
    dataset: list[tuple[str, int]] | None = None  # the same rows given in Python
    expert_type: str = "fine_tuned"
    layers: list[int] | None = None  # decoder layers that get a mixture (None: all)
    lr: float = 1e-3
    epochs: int = 100
    batch_size: int = 4
    gate_model_id: str | None = None
    loss_csv_path: str | None = None  # per-epoch mean loss of every gate, as CSV
    seed: int = 0  # the gates' initialisation and the order of the examples
    # mistral.rs's expert_type.lora_adapter table {rank, alpha, target_modules}: checked against each adapter's own
    lora_adapter: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.model_ids, list)
            or not self.model_ids
            or not all(isinstance(m, str) and m for m in self.model_ids)
        ):
            raise InvalidRequestError("anymoe model_ids must be a non-empty list of expert folders")
        if self.expert_type not in EXPERT_TYPES:
            raise InvalidRequestError(f"anymoe expert_type must be one of {EXPERT_TYPES}, got {self.expert_type!r}")
        if (self.dataset_json is None) == (self.dataset is None):
            raise InvalidRequestError("anymoe needs exactly one of dataset_json (a file) and dataset (rows)")
        if self.layers is not None and (
            not isinstance(self.layers, list) or not self.layers
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layers)
        ):  # fmt: skip
            raise InvalidRequestError(f"anymoe layers must be a non-empty list of layer indices, got {self.layers!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequestError(f"anymoe {name} must be a positive integer, got {value!r}")
        if not isinstance(self.lr, int | float) or isinstance(self.lr, bool) or not 0 < self.lr < float("inf"):
            raise InvalidRequestError(f"anymoe lr must be a positive number, got {self.lr!r}")
        if self.extra:
            raise InvalidRequestError(f"unknown anymoe options: {', '.join(sorted(self.extra))}")

    @property
    def num_experts(self) -> int:
        return len(self.model_ids) + 1

    @classmethod
    def from_file(cls, path: str | Path) -> AnyMoeConfig:
        """A .json or .toml file: mistral.rs's `[anymoe]` table (with its `[anymoe.config]`), or those keys at the
        top; a relative dataset or expert path is taken from the file's folder."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            raw = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InvalidRequestError(f"cannot read the AnyMoE config {file}: {e}") from None
        if not isinstance(raw, dict):
            raise InvalidRequestError(f"the AnyMoE config {file} must hold a table / object")
        return cls.from_dict(raw.get("anymoe", raw), file.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path = Path(".")) -> AnyMoeConfig:
        flat = {k: v for k, v in raw.items() if k != "config"}
        flat.update(raw.get("config") or {})
        expert_type = flat.get("expert_type", "fine_tuned")
        if isinstance(expert_type, dict) and list(expert_type) == ["lora_adapter"]:
            _check_lora_table(expert_type["lora_adapter"])
            flat["expert_type"], flat["lora_adapter"] = "lora_adapter", expert_type["lora_adapter"]
        flat.pop("hidden_size", None)  # read from the model; a mismatch could only be an error
        for key, only in (("prefix", "model.layers"), ("mlp", "mlp")):
            if flat.pop(key, only) != only:
                raise InvalidRequestError(f"anymoe {key}={raw.get(key)!r}: only the decoder layers' MLPs can be mixed")
        for key in ("dataset_json", "gate_model_id", "loss_csv_path"):
            if isinstance(flat.get(key), str):
                flat[key] = str(base / flat[key])
        if isinstance(flat.get("model_ids"), list):
            flat["model_ids"] = [str(base / m) if isinstance(m, str) else m for m in flat["model_ids"]]
        known = {f.name for f in fields(cls)} - {"extra", "dataset"}
        return cls(
            **{k: v for k, v in flat.items() if k in known}, extra={k: v for k, v in flat.items() if k not in known}
        )


def _check_lora_table(table: object) -> None:
    """mistral.rs names rank, alpha and target_modules here; a PEFT adapter records its own: they must agree."""
    if not isinstance(table, dict) or set(table) - {"rank", "alpha", "target_modules"}:
        raise InvalidRequestError(f"anymoe expert_type.lora_adapter takes rank, alpha, target_modules; got {table!r}")
