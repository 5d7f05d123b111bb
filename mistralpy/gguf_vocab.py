"""GGUFVocab: the tokenizer.ggml.* metadata of a GGUF file (or of a legacy GGML file read as one), read once and
checked: the token list, per-token arrays of its length, merges of two tokens, special ids within the vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ModelLoadError
from .gguf_metadata import describe, get_bool, get_int, get_list, get_str

_IDS = ("bos", "eos", "unknown", "eot", "eom")


@dataclass(frozen=True)
class GGUFVocab:
    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece); others are refused by the backend
    tokens: list[str]
    token_types: list[int]  # llama.cpp's token types, one per token (empty: none given)
    scores: list[float] | None  # one per token
    merges: list[tuple[str, str]]
    pre: str | None  # llama.cpp's pre-tokenizer name
    ids: dict[str, int | None]  # "bos", "eos", "unknown", "eot", "eom" -> a token id
    add_bos: bool | None  # None: the model type's default
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None


def read_vocab(metadata: dict[str, Any]) -> GGUFVocab:
    tokens = get_list(metadata, "tokenizer.ggml.tokens", "str")
    if not tokens:
        raise ModelLoadError("GGUF metadata has no tokenizer (tokenizer.ggml.tokens is missing or empty)")
    n = len(tokens)
    return GGUFVocab(
        model=get_str(metadata, "tokenizer.ggml.model"),
        tokens=tokens,
        token_types=get_list(metadata, "tokenizer.ggml.token_type", "int", n) or [],
        scores=get_list(metadata, "tokenizer.ggml.scores", "number", n),
        merges=_merges(get_list(metadata, "tokenizer.ggml.merges", "str") or [], tokens),
        pre=get_str(metadata, "tokenizer.ggml.pre"),
        ids={name: get_int(metadata, f"tokenizer.ggml.{name}_token_id", high=n - 1) for name in _IDS},
        add_bos=get_bool(metadata, "tokenizer.ggml.add_bos_token", None),
        add_eos=get_bool(metadata, "tokenizer.ggml.add_eos_token", False),
        add_space_prefix=get_bool(metadata, "tokenizer.ggml.add_space_prefix", True),
        chat_template=get_str(metadata, "tokenizer.chat_template"),
    )


def _merges(merges: list[str], tokens: list[str]) -> list[tuple[str, str]]:
    """Each merge as its two tokens. What they make must be a token: `tokenizers` panics on a merge that makes an
    unknown one (an unknown part is its own error)."""
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    known = set(tokens)
    if all(len(p) == 2 and p[0] + p[1] in known for p in pairs):
        return pairs
    index, pair = next((i, p) for i, p in enumerate(pairs) if len(p) != 2 or p[0] + p[1] not in known)
    if len(pair) != 2:
        raise ModelLoadError(f"tokenizer.ggml.merges[{index}] is {describe(merges[index])}, not two tokens and a space")
    raise ModelLoadError(
        f"invalid GGUF tokenizer vocabulary: merge {index} ({describe(merges[index])}) makes "
        f"{describe(''.join(pair))}, which is not a token"
    )
