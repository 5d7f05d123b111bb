"""GGUF metadata -> ModelConfig: the "{arch}." keys under their Hugging Face names, each checked for its type and
range, and against what the file's tensors show (its layers, its rotary factors) before anything is sized by it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import ModelConfig
from ..errors import MistralpyError, ModelLoadError
from ..gguf_metadata import MAX_SIZE, check_int, get_float, get_int, get_list, get_per_layer, get_str

if TYPE_CHECKING:
    from .gguf import GGUFFile

MAX_CONTEXT = 1 << 24  # above any model's context (Llama 4 Scout: 10M); the rotary tables are sized by it
MAX_EXPERTS = 512  # llama.cpp's LLAMA_MAX_EXPERTS
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
    "rope.freq_base_swa": "rope_local_base_freq",
    "attention.sliding_window_pattern": "sliding_window_pattern",
}
# The extra keys models read, and the (low, high) of an integer one or None for a number.
_TYPED_EXTRAS: dict[str, tuple[int, int] | None] = {
    "attention.sliding_window": (0, MAX_CONTEXT),
    "expert_count": (0, MAX_EXPERTS),
    "expert_used_count": (0, MAX_EXPERTS),
    "expert_gating_func": (0, 16),
    "rope.dimension_count": (1, MAX_SIZE),
    "attention.value_length": (1, MAX_SIZE),
    "rope.scaling.original_context_length": (1, MAX_CONTEXT),
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "attention.layer_norm_epsilon": None,
    "rope.scaling.factor": None,
    "rope.scaling.attn_factor": None,
    "rope.scale_linear": None,
    "rope.freq_base_swa": None,
}


def gguf_model_config(file: GGUFFile) -> ModelConfig:
    try:
        return _model_config(file)
    except MistralpyError as e:
        raise ModelLoadError(f"invalid model metadata in {file.path}: {e}") from None


def _model_config(file: GGUFFile) -> ModelConfig:
    arch = get_str(file.metadata, "general.architecture")
    if not arch:
        raise ModelLoadError("no general.architecture")
    keys = _ArchKeys(file.metadata, arch)
    head_count = keys.largest("attention.head_count")
    head_dim = keys.int("attention.key_length")
    vocab_size = _vocab_size(file, keys)
    extra = keys.unconsumed()
    rope_freqs = _rope_freqs(file, keys, head_dim or keys.size("embedding_length") // head_count)
    if rope_freqs is not None:
        extra["rope_freqs"] = rope_freqs
    if extra.get("sliding_window") == 0:  # llama.cpp writes 0 for "no window" (Phi-3)
        del extra["sliding_window"]
    return ModelConfig(
        architecture=arch,
        vocab_size=vocab_size,
        hidden_size=keys.size("embedding_length"),
        intermediate_size=keys.largest("feed_forward_length"),
        num_hidden_layers=keys.size("block_count"),
        num_attention_heads=head_count,
        num_key_value_heads=keys.largest("attention.head_count_kv", head_count),
        max_position_embeddings=keys.int("context_length", high=MAX_CONTEXT, required=True),
        rms_norm_eps=keys.float("attention.layer_norm_rms_epsilon", 1e-6),
        rope_theta=keys.float("rope.freq_base", 10000.0, positive=True),
        rope_scaling=_longrope_scaling(file, keys) or keys.rope_scaling(),
        head_dim=head_dim,
        tie_word_embeddings="output.weight" not in file.tensor_names,
        bos_token_id=get_int(file.metadata, "tokenizer.ggml.bos_token_id", high=vocab_size - 1),
        eos_token_ids=_eos_token_ids(file.metadata, vocab_size),
        extra=extra,
    )


def _vocab_size(file: GGUFFile, keys: _ArchKeys) -> int:
    if keys.int("vocab_size") is not None:
        return keys.size("vocab_size")
    tokens = get_list(file.metadata, "tokenizer.ggml.tokens", "str")
    if tokens:
        return len(tokens)
    if "token_embd.weight" in file.tensor_names and file.tensor_info("token_embd.weight").shape:
        return check_int("the rows of token_embd.weight", file.tensor_info("token_embd.weight").shape[0], 1)
    raise ModelLoadError("no vocabulary size (no vocab_size key, tokenizer.ggml.tokens or token_embd.weight)")


def _eos_token_ids(metadata: dict[str, Any], vocab_size: int) -> list[int]:
    ids: list[int] = []
    # eot (end of turn) and eom (end of message) also end a generation, as HF's generation_config lists them
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        value = get_int(metadata, key, high=vocab_size - 1)
        if value is not None and value not in ids:
            ids.append(value)
    return ids


def _factors(file: GGUFFile, name: str, count: int) -> list[float]:
    """A 1-D tensor of `count` values (rotary frequency factors) as a list."""
    shape = file.tensor_info(name).shape
    if shape != (count,):
        raise ModelLoadError(f"tensor {name} has shape {shape}; expected ({count},)")
    return file.load_tensor(name).tolist()


def _rope_freqs(file: GGUFFile, keys: _ArchKeys, head_dim: int) -> list[float] | None:
    if "rope_freqs.weight" not in file.tensor_names:
        return None
    return _factors(file, "rope_freqs.weight", (keys.int("rope.dimension_count") or head_dim) // 2)


def _longrope_scaling(file: GGUFFile, keys: _ArchKeys) -> dict[str, Any] | None:
    """LongRoPE (Phi-3): llama.cpp stores its factors as tensors and writes no rope.scaling.type."""
    if "rope_factors_long.weight" not in file.tensor_names:
        return None
    count = file.tensor_info("rope_factors_long.weight").shape[-1:] or (0,)
    scaling = {
        "rope_type": "longrope",
        "long_factor": _factors(file, "rope_factors_long.weight", count[0]),
        "short_factor": _factors(file, "rope_factors_short.weight", count[0])
        if "rope_factors_short.weight" in file.tensor_names
        else None,
        "original_max_position_embeddings": keys.int("rope.scaling.original_context_length", high=MAX_CONTEXT),
        "attention_factor": keys.float("rope.scaling.attn_factor"),
    }
    return {key: value for key, value in scaling.items() if value is not None}


class _ArchKeys:
    """Reads the "{arch}." metadata keys of one file, each checked for the type and range its use needs."""

    def __init__(self, metadata: dict[str, Any], arch: str) -> None:
        self.metadata, self.prefix = metadata, f"{arch}."

    def int(self, suffix: str, low: int = 1, high: int = MAX_SIZE, required: bool = False) -> int | None:
        if required and self.metadata.get(self.prefix + suffix) is None:
            raise ModelLoadError(f"no metadata key {self.prefix + suffix}")
        return get_int(self.metadata, self.prefix + suffix, None, low, high)

    def size(self, suffix: str) -> int:
        return self.int(suffix, required=True)

    def float(self, suffix: str, default: float | None = None, positive: bool = False) -> float | None:
        return get_float(self.metadata, self.prefix + suffix, default, positive)

    def largest(self, suffix: str, default: int | None = None) -> int:
        # some families store a per-layer list; the list itself stays available in extra
        value = get_per_layer(self.metadata, self.prefix + suffix, default)
        return max(value) if isinstance(value, list) else value

    def rope_scaling(self) -> dict[str, Any] | None:
        scaling = {
            key[len(self.prefix + "rope.scaling.") :]: value
            for key, value in self.metadata.items()
            if key.startswith(self.prefix + "rope.scaling.")
        }
        rope_type = get_str(self.metadata, self.prefix + "rope.scaling.type")
        scaling.pop("type", None)
        if rope_type is None and self.float("rope.scale_linear") is not None:
            rope_type, scaling["factor"] = "linear", self.float("rope.scale_linear", positive=True)
        if rope_type in (None, "none"):
            return None
        if self.prefix + "rope.scaling.factor" in self.metadata:
            scaling["factor"] = self.float("rope.scaling.factor", positive=True)
        if "original_context_length" in scaling:
            scaling["original_max_position_embeddings"] = scaling.pop("original_context_length")
        return {"rope_type": rope_type, **scaling}

    def unconsumed(self) -> dict[str, Any]:
        for suffix, bounds in _TYPED_EXTRAS.items():
            if bounds is None:
                self.float(suffix)
            else:
                self.int(suffix, *bounds)
        return {
            _HF_EXTRA_NAMES.get(key[len(self.prefix) :], key[len(self.prefix) :]): value
            for key, value in self.metadata.items()
            if key.startswith(self.prefix)
            and (key[len(self.prefix) :] not in _CONSUMED_KEYS or isinstance(value, list))
            and not key.startswith(self.prefix + "rope.scaling.")
        }
