"""GGUFFile: a GGUF model file as metadata, a ModelConfig and named tensors, read through a memory map."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..config import ModelConfig
from ..errors import MistralpyError, ModelLoadError, ModelNotFoundError
from ..quant.ggml_types import GGMLQuantizationType
from ..quant.gguf_dequant import dequantize
from .gguf_header import GGUFFormatError, GGUFHeader, TensorEntry, parse_header

GGUF_MAGIC_BYTES = b"GGUF"

# Types whose stored bytes already are a torch dtype: returned as views when that dtype is asked for.
_NATIVE_DTYPES = {
    GGMLQuantizationType.F32: torch.float32,
    GGMLQuantizationType.F16: torch.float16,
    GGMLQuantizationType.BF16: torch.bfloat16,
}
# Keys model_config() maps to named ModelConfig fields; every other "{arch}." key goes to extra.
_CONSUMED_KEYS = {
    "block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "rope.freq_base", "attention.layer_norm_rms_epsilon", "attention.key_length",
    "vocab_size", "rope.scale_linear",
}  # fmt: skip
# GGUF metadata keys (after "{arch}.") stored in ModelConfig.extra under their Hugging Face config.json names, so that
# a model reads one name whichever format it came from; other keys keep their GGUF names.
_HF_EXTRA_NAMES = {
    "attention.sliding_window": "sliding_window",
    "attn_logit_softcapping": "attn_logit_softcapping",
    "final_logit_softcapping": "final_logit_softcapping",
    "expert_count": "num_local_experts",
    "expert_used_count": "num_experts_per_tok",
    "attention.layer_norm_epsilon": "layer_norm_eps",
}


class TensorInfo(NamedTuple):
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # torch order: (out_features, in_features) for a linear weight


def has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC_BYTES
    except OSError:
        return False


def _open_map(path: Path) -> mmap.mmap:
    with open(path, "rb") as f:
        # copy-on-write: tensors handed out are writable views, and writes never reach the file
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


class GGUFFile:
    """A GGUF file. Tensors are views on a copy-on-write memory map: nothing is read until it is used."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ModelNotFoundError(f"model file not found: {self.path}")
        if self.path.is_dir():
            raise ModelLoadError(f"not a GGUF file (a directory): {self.path}")
        if not has_gguf_magic(self.path):
            raise ModelLoadError(f"not a GGUF file: {self.path}")
        try:
            self._map = _open_map(self.path)
            header: GGUFHeader = parse_header(self._map)
        except (GGUFFormatError, OSError, ValueError) as e:
            raise ModelLoadError(f"truncated or corrupt GGUF file: {self.path} ({e})") from None
        self.version = header.version
        self.metadata: dict[str, Any] = header.metadata
        self._tensors: dict[str, TensorEntry] = header.tensors
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, architecture={self.metadata.get('general.architecture')!r})"

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ModelLoadError(f"GGUF file has no general.architecture: {self.path}")
        return arch

    def release_pages(self) -> None:
        """Drop the file's pages from memory. Tensors still viewing the map stay valid: the kernel reads their
        pages back from the file on the next touch (nothing writes to the map, so no private page is lost)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor_info(self, name: str) -> TensorInfo:
        entry = self._entry(name)
        return TensorInfo(entry.qtype, entry.shape)

    def raw_tensor(self, name: str) -> tuple[torch.Tensor, GGMLQuantizationType, tuple[int, ...]]:
        """The stored blocks as uint8 of shape (*shape[:-1], bytes_per_row), its type, and its torch shape."""
        entry = self._entry(name)
        raw = self._bytes[entry.offset : entry.offset + entry.n_bytes]
        rows = entry.shape[:-1] if entry.shape else ()
        return raw.reshape(*rows, -1), entry.qtype, entry.shape

    def load_tensor(self, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """The tensor dequantized, in torch order; `dtype=None` keeps float32 (or the stored float dtype)."""
        raw, qtype, shape = self.raw_tensor(name)
        native = _NATIVE_DTYPES.get(qtype)
        if native is not None and dtype in (None, native) and raw.storage_offset() % 8 == 0:
            return raw.reshape(-1).view(native).reshape(shape)
        try:
            tensor = dequantize(raw, qtype, shape)
        except MistralpyError as e:
            raise ModelLoadError(f"cannot load tensor {name!r} from {self.path}: {e}") from None
        return tensor if dtype is None else tensor.to(dtype)

    def model_config(self) -> ModelConfig:
        arch = self.architecture
        keys = _ArchKeys(self, arch)
        head_count = keys.largest("attention.head_count")
        rope_freqs = self.load_tensor("rope_freqs.weight").tolist() if "rope_freqs.weight" in self._tensors else None
        extra = keys.unconsumed()
        if rope_freqs is not None:
            extra["rope_freqs"] = rope_freqs
        if extra.get("sliding_window") == 0:  # llama.cpp writes 0 for "no window" (Phi-3)
            del extra["sliding_window"]
        try:
            return ModelConfig(
                architecture=arch,
                vocab_size=self._vocab_size(arch),
                hidden_size=keys.required("embedding_length"),
                intermediate_size=keys.largest("feed_forward_length"),
                num_hidden_layers=keys.required("block_count"),
                num_attention_heads=head_count,
                num_key_value_heads=keys.largest("attention.head_count_kv", head_count),
                max_position_embeddings=keys.required("context_length"),
                rms_norm_eps=keys.get("attention.layer_norm_rms_epsilon", 1e-6),
                rope_theta=keys.get("rope.freq_base", 10000.0),
                rope_scaling=self._longrope_scaling(keys) or keys.rope_scaling(),
                head_dim=keys.get("attention.key_length"),
                tie_word_embeddings="output.weight" not in self._tensors,
                bos_token_id=self.metadata.get("tokenizer.ggml.bos_token_id"),
                eos_token_ids=self._eos_token_ids(),
                extra=extra,
            )
        except MistralpyError as e:
            raise ModelLoadError(f"invalid model metadata in {self.path}: {e}") from None

    def _longrope_scaling(self, keys: _ArchKeys) -> dict[str, Any] | None:
        """LongRoPE (Phi-3): llama.cpp stores its factors as tensors and writes no rope.scaling.type."""
        if "rope_factors_long.weight" not in self._tensors:
            return None
        scaling = {
            "rope_type": "longrope",
            "long_factor": self.load_tensor("rope_factors_long.weight").tolist(),
            "short_factor": self.load_tensor("rope_factors_short.weight").tolist(),
            "original_max_position_embeddings": keys.get("rope.scaling.original_context_length"),
            "attention_factor": keys.get("rope.scaling.attn_factor"),
        }
        return {key: value for key, value in scaling.items() if value is not None}

    def _vocab_size(self, arch: str) -> int:
        if f"{arch}.vocab_size" in self.metadata:
            return int(self.metadata[f"{arch}.vocab_size"])
        if "tokenizer.ggml.tokens" in self.metadata:
            return len(self.metadata["tokenizer.ggml.tokens"])
        if "token_embd.weight" in self._tensors:
            return self._tensors["token_embd.weight"].shape[0]
        raise ModelLoadError(f"cannot tell the vocabulary size of {self.path}")

    def _eos_token_ids(self) -> list[int]:
        ids: list[int] = []
        # eot (end of turn) and eom (end of message) also end a generation, as HF's generation_config lists them
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            value = self.metadata.get(key)
            if isinstance(value, int) and value not in ids:
                ids.append(value)
        return ids

    def _entry(self, name: str) -> TensorEntry:
        entry = self._tensors.get(name)
        if entry is None:
            raise ModelLoadError(f"tensor {name!r} not found in {self.path}")
        return entry


class _ArchKeys:
    """Reads the "{arch}." metadata keys of one file."""

    def __init__(self, file: GGUFFile, arch: str) -> None:
        self.file, self.prefix = file, f"{arch}."

    def get(self, suffix: str, default: Any = None) -> Any:
        return self.file.metadata.get(self.prefix + suffix, default)

    def required(self, suffix: str) -> Any:
        value = self.get(suffix)
        if value is None:
            raise ModelLoadError(f"GGUF file lacks metadata key {self.prefix + suffix}: {self.file.path}")
        return value

    def largest(self, suffix: str, default: Any = None) -> int:
        # some families store a per-layer list; the list itself stays available in extra
        value = self.required(suffix) if default is None else self.get(suffix, default)
        return max(value) if isinstance(value, list) else int(value)

    def rope_scaling(self) -> dict[str, Any] | None:
        scaling = {
            key[len(self.prefix + "rope.scaling.") :]: value
            for key, value in self.file.metadata.items()
            if key.startswith(self.prefix + "rope.scaling.")
        }
        rope_type = scaling.pop("type", None)
        if rope_type is None and self.get("rope.scale_linear") is not None:
            rope_type, scaling["factor"] = "linear", self.get("rope.scale_linear")
        if rope_type in (None, "none"):
            return None
        if "original_context_length" in scaling:
            scaling["original_max_position_embeddings"] = scaling.pop("original_context_length")
        return {"rope_type": rope_type, **scaling}

    def unconsumed(self) -> dict[str, Any]:
        return {
            _HF_EXTRA_NAMES.get(key[len(self.prefix) :], key[len(self.prefix) :]): value
            for key, value in self.file.metadata.items()
            if key.startswith(self.prefix)
            and (key[len(self.prefix) :] not in _CONSUMED_KEYS or isinstance(value, list))
            and not key.startswith(self.prefix + "rope.scaling.")
        }
