"""HFFolder: a Hugging Face model folder (config.json, generation_config.json, *.safetensors) as a ModelConfig and
named tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import MistralpyError, ModelLoadError, ModelNotFoundError
from .vlm_config import flatten_vlm_config

_INDEX_FILE = "model.safetensors.index.json"
_GENERATION_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens", "do_sample")
# config.json keys model_config() maps to named ModelConfig fields; all others are kept in extra.
_MAPPED_KEYS = {
    "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "rope_parameters", "head_dim", "tie_word_embeddings", "bos_token_id", "eos_token_id",
}  # fmt: skip


def read_json_object(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    """A JSON file holding one object; a missing file is {} when missing_ok. Anything else is a ModelLoadError."""
    if missing_ok and not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"cannot read {path}: expected a JSON object")
    return data


def sampling_defaults(generation_config: dict[str, Any]) -> dict[str, Any]:
    """The sampling keys a generation_config.json sets."""
    return {key: generation_config[key] for key in _GENERATION_KEYS if key in generation_config}


def _id_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _rope(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) from rope_theta + rope_scaling (transformers 4) or rope_parameters (5); with
    parameters per layer type (Gemma 3), those of the full-attention layers."""
    params = dict(_per_layer_type(config).get("full_attention") or config.get("rope_parameters") or {})
    params = params or dict(config.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", config.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", None) or params.pop("type", None)
    params.pop("type", None)
    if rope_type in (None, "default"):
        return theta, None
    return theta, {"rope_type": rope_type, **params}


def _per_layer_type(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5's rope_parameters keyed by layer type ({"full_attention": {...}, "sliding_attention": {...}}),
    or {} for one set of parameters."""
    params = config.get("rope_parameters") or {}
    return params if isinstance(params.get("full_attention"), dict) else {}


def _rope_extra(config: dict[str, Any]) -> dict[str, Any]:
    """Fields of rope_parameters that are not about scaling (transformers 5 moved partial_rotary_factor there), and
    the sliding layers' own rotary (Gemma 3) under transformers 4's names: rope_local_base_freq, rope_local_scaling."""
    params = config.get("rope_parameters") or {}
    extra = {key: params[key] for key in ("partial_rotary_factor",) if key in params}
    local = _per_layer_type(config).get("sliding_attention")
    if isinstance(local, dict):
        theta, scaling = _rope({"rope_parameters": local})
        extra.update(rope_local_base_freq=theta, rope_local_scaling=scaling)
    return extra


class HFFolder:
    """A folder written by `save_pretrained`: tensors are read from the safetensors files on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ModelNotFoundError(f"model folder not found: {self.path}")
        if not (self.path / "config.json").is_file():
            raise ModelLoadError(f"no config.json in model folder: {self.path}")
        self.config: dict[str, Any] = flatten_vlm_config(read_json_object(self.path / "config.json"))
        self.generation_config = read_json_object(self.path / "generation_config.json", missing_ok=True)
        self._handles: dict[str, Any] = {}
        self._files = self._weight_map()

    def __repr__(self) -> str:
        return f"HFFolder({str(self.path)!r}, architecture={self.architecture!r})"

    @property
    def architecture(self) -> str:
        architectures = self.config.get("architectures")
        if architectures:
            return str(architectures[0])
        if "model_type" in self.config:
            return str(self.config["model_type"])
        raise ModelLoadError(f"config.json names no architecture: {self.path}")

    @property
    def generation_defaults(self) -> dict[str, Any]:
        """Sampling defaults from generation_config.json (only the keys it sets)."""
        return sampling_defaults(self.generation_config)

    @property
    def tensor_names(self) -> list[str]:
        return list(self._files)

    def load_tensor(self, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """The named tensor, cast to `dtype` (`None` keeps the stored dtype)."""
        file = self._files.get(name)
        if file is None:
            raise ModelLoadError(f"tensor {name!r} not found in {self.path}")
        try:
            tensor = self._handle(file).get_tensor(name)
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ModelLoadError(f"cannot read tensor {name!r} from {self.path / file}: {e}") from None
        return tensor if dtype is None else tensor.to(dtype)

    def model_config(self) -> ModelConfig:
        cfg = self.config
        rope_theta, rope_scaling = _rope(cfg)
        eos = _id_list(cfg.get("eos_token_id"))
        eos += [i for i in _id_list(self.generation_config.get("eos_token_id")) if i not in eos]
        bos = cfg.get("bos_token_id", self.generation_config.get("bos_token_id"))
        tied = bool(cfg.get("tie_word_embeddings", False)) or "lm_head.weight" not in self._files
        try:
            heads = int(self._required("num_attention_heads"))
            return ModelConfig(
                architecture=self.architecture,
                vocab_size=int(self._required("vocab_size")),
                hidden_size=int(self._required("hidden_size")),
                intermediate_size=int(self._required("intermediate_size")),
                num_hidden_layers=int(self._required("num_hidden_layers")),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                max_position_embeddings=int(self._required("max_position_embeddings")),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                head_dim=cfg.get("head_dim"),
                tie_word_embeddings=tied,
                bos_token_id=None if bos is None else int(bos),
                eos_token_ids=eos,
                extra={**_rope_extra(cfg), **{k: v for k, v in cfg.items() if k not in _MAPPED_KEYS}},
            )
        except (TypeError, ValueError, MistralpyError) as e:
            raise ModelLoadError(f"invalid config.json in {self.path}: {e}") from None

    def _required(self, key: str) -> Any:
        if self.config.get(key) is None:
            raise ModelLoadError(f"config.json lacks {key!r}: {self.path}")
        return self.config[key]

    def _weight_map(self) -> dict[str, str]:
        """Tensor name -> safetensors file name, from the shard index when there is one."""
        index = self.path / _INDEX_FILE
        if index.is_file():
            weight_map = read_json_object(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ModelLoadError(f"{index} has no weight_map")
            for file in weight_map.values():
                if not self._weight_file(file, index).is_file():
                    raise ModelLoadError(f"{index} names a missing file: {file}")
            return {str(k): str(v) for k, v in weight_map.items()}
        files = sorted(p.name for p in self.path.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"no *.safetensors weights in model folder: {self.path}")
        weight_map = {}
        for file in files:
            self._weight_file(file, self.path)
            weight_map.update(dict.fromkeys(self._handle(file).keys(), file))
        return weight_map

    def _weight_file(self, file: Any, named_by: Path) -> Path:
        """The path of a weight file named by `named_by`, once known to stay inside the model folder: no absolute
        path, no '..', no symlink leading elsewhere, except into the Hugging Face cache's blobs/ (its snapshots/<rev>/
        folders link every file there)."""
        if not isinstance(file, str) or not file:
            raise ModelLoadError(f"{named_by} names a weight file that is not a file name: {file!r}")
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise ModelLoadError(f"{named_by} names {file!r}, a path outside the model folder {self.path}")
        folder = self.path.resolve()
        roots = [folder] + ([folder.parent.parent / "blobs"] if folder.parent.name == "snapshots" else [])
        target = (folder / file).resolve()
        if not any(target.is_relative_to(root) for root in roots):
            raise ModelLoadError(f"{named_by} names {file!r}, which leads outside the model folder {self.path}")
        return self.path / file

    def _handle(self, file: str) -> Any:
        handle = self._handles.get(file)
        if handle is None:
            from safetensors import safe_open  # here: a GGUF-only process never loads the library

            try:
                handle = safe_open(str(self.path / file), framework="pt")
            except Exception as e:  # safetensors raises its own error types for corrupt files
                raise ModelLoadError(f"cannot open {self.path / file}: {e}") from None
            self._handles[file] = handle
        return handle
