"""EmbeddingSpec: how a model's hidden states become embeddings, read from a sentence-transformers folder
(modules.json: Transformer -> Pooling -> Normalize; 1_Pooling/config.json; sentence_bert_config.json's
max_seq_length) or, for other models, from the pooling asked for (llama.cpp's `--pooling`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelLoadError, PromptTooLongError
from ..loader.hf_folder import HFFolder, read_json_object
from .pooling import PoolingParams

# sentence-transformers' Pooling config keys -> our modes; the other keys (max, mean_sqrt_len, weightedmean) are not
# supported and named in the error.
_ST_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last"}
_ST_OTHER_MODES = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
_ST_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class EmbeddingSpec:
    pooling: PoolingParams  # the model's own mode and normalisation; a request may only choose dimensions
    hidden_size: int
    max_seq_length: int | None = None  # sentence-transformers' limit on a text's tokens (below the model's context)
    # None: not a Matryoshka model ('dimensions' is refused); () any prefix length; else the trained lengths
    matryoshka_dimensions: tuple[int, ...] | None = None

    def request_params(self, dimensions: int | None) -> PoolingParams:
        if dimensions is None:
            return self.pooling
        if self.matryoshka_dimensions is None:
            raise InvalidRequestError("this model does not support 'dimensions': it is not a Matryoshka model")
        allowed = self.matryoshka_dimensions
        if allowed and dimensions not in allowed or not 1 <= dimensions <= self.hidden_size:
            sizes = ", ".join(map(str, allowed)) if allowed else f"1 to {self.hidden_size}"
            raise InvalidRequestError(f"dimensions {dimensions!r} is not supported by this model; use {sizes}")
        return dataclasses.replace(self.pooling, dimensions=dimensions)

    def check_prompt(self, ids: list[int], vocab_size: int, max_len: int) -> None:
        if not ids:
            raise InvalidRequestError("an input to embed is empty")
        bad = next((t for t in ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(f"input token id {bad!r} is outside the vocabulary (size {vocab_size})")
        if len(ids) > max_len:
            raise PromptTooLongError(f"an input has {len(ids)} tokens; this model embeds at most {max_len}")


def source_embedding_spec(source, hidden_size: int, pooling: str | None, is_encoder: bool) -> EmbeddingSpec:
    """The spec of a model source: an HF folder may be a sentence-transformers one; a GGUF file is a decoder's."""
    if isinstance(source, HFFolder):
        return embedding_spec(source.path, source.config, hidden_size, pooling, is_encoder)
    return embedding_spec(None, {}, hidden_size, pooling, is_encoder)


def embedding_spec(folder: Path | None, config: dict[str, Any], hidden_size: int, pooling: str | None,
                   is_encoder: bool) -> EmbeddingSpec:  # fmt: skip
    """`folder`: the model's folder (None for a GGUF file), `config` its config.json; `pooling` overrides the
    folder's mode. Without a sentence-transformers layout an encoder pools "cls" (BERT's summary token) and a
    decoder "last", both normalised (vLLM's and llama.cpp's defaults)."""
    modules = _st_modules(folder)
    if modules is None:
        mode, normalize, max_len = pooling or ("cls" if is_encoder else "last"), True, None
    else:
        pooling_module = next((m for m in modules if m["kind"] == "Pooling"), None)
        own = _st_pooling_mode(folder / pooling_module["path"]) if pooling_module else None
        mode = pooling or own or ("cls" if is_encoder else "last")
        normalize = any(m["kind"] == "Normalize" for m in modules)
        max_len = read_json_object(folder / "sentence_bert_config.json", missing_ok=True).get("max_seq_length")
    return EmbeddingSpec(PoolingParams(mode, normalize), hidden_size, _positive_int(max_len), _matryoshka(config))


def _st_modules(folder: Path | None) -> list[dict[str, str]] | None:
    if folder is None or not (folder / "modules.json").is_file():
        return None
    try:
        entries = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        modules = [{"kind": str(e["type"]).rpartition(".")[2], "path": str(e.get("path", ""))} for e in entries]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelLoadError(f"cannot read {folder / 'modules.json'}: {e}") from None
    unsupported = [m["kind"] for m in modules if m["kind"] not in _ST_MODULES]
    if unsupported:
        raise ModelLoadError(
            f"unsupported sentence-transformers modules {unsupported} in {folder}; supported: {', '.join(_ST_MODULES)}"
        )
    return modules


def _st_pooling_mode(folder: Path) -> str:
    config = read_json_object(folder / "config.json")
    other = [key for key in _ST_OTHER_MODES if config.get(key)]
    modes = [mode for key, mode in _ST_MODES.items() if config.get(key)]
    if other or len(modes) != 1:
        raise ModelLoadError(f"unsupported pooling in {folder / 'config.json'}: one of {', '.join(_ST_MODES)} expected")
    return modes[0]


def _matryoshka(config: dict[str, Any]) -> tuple[int, ...] | None:
    """vLLM's config.json keys: `matryoshka_dimensions` (the trained lengths) or `is_matryoshka` (any length)."""
    dims = config.get("matryoshka_dimensions")
    if isinstance(dims, list) and dims and all(_positive_int(d) for d in dims):
        return tuple(dims)
    return () if config.get("is_matryoshka") is True else None


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
