"""GGUF tokenizer metadata (tokenizer.ggml.*) -> a HF `tokenizers` backend: byte-level BPE or SentencePiece BPE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from .errors import ModelLoadError
from .gguf_metadata import describe
from .gguf_vocab import GGUFVocab

# Pre-tokenizer splits by llama.cpp's `tokenizer.ggml.pre` name. Each regex splits the pieces the previous one left.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN35 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# (names, regexes, ignore_merges, add_bos default)
_PRE_FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, ...], bool, bool], ...] = (
    (("default",), (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"), False, False),
    (("gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "mellum", "roberta-bpe"),
     (_GPT2,), False, False),
    (("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"),
     (r"\p{N}", _GPT2), False, False),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
     (_LLAMA3,), True, True),
    (("dbrx", "smaug-bpe"), (_LLAMA3,), False, False),
    (("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"),
     (_QWEN2,), False, False),
    (("qwen35",), (_QWEN35,), False, False),
    (("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), (_GPT4O,), False, False),
    (("tekken",), (_TEKKEN,), True, True),
)  # fmt: skip
_PRE_SPLITS = {name: (regexes, ignore, bos) for names, regexes, ignore, bos in _PRE_FAMILIES for name in names}
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6  # llama.cpp token types
# A legacy GGML vocabulary as convert_llama_ggml_to_gguf.py reads it: LLaMA's SentencePiece ids 0-2 are <unk> <s> </s>
# (stored as " \u2047 " and empty pieces), ids 3-258 its byte pieces (stored as the byte); pieces have " " for "▁".
_LEGACY_SPECIALS = (("<unk>", _UNKNOWN), ("<s>", _CONTROL), ("</s>", _CONTROL))


def gguf_backend(vocab: GGUFVocab) -> HFTokenizer:
    if vocab.model == "gpt2":
        backend, add_bos = _byte_level_backend(vocab)
    elif vocab.model == "llama":
        backend, add_bos = _sentencepiece_backend(vocab), True
    else:
        raise ModelLoadError(f"unsupported tokenizer model: {describe(vocab.model)} (supported: 'gpt2', 'llama')")
    # control tokens are special (matched whole, skipped on decode); user-defined ones are matched whole but kept
    typed = list(zip(vocab.tokens, vocab.token_types, strict=False))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, kind in typed
                                if kind in (_UNKNOWN, _CONTROL)])  # fmt: skip
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t, kind in typed if kind == _USER_DEFINED])
    add_bos = add_bos if vocab.add_bos is None else vocab.add_bos
    bos_id, eos_id = vocab.ids["bos"], vocab.ids["eos"]
    backend.post_processor = bos_eos_processor(backend, bos_id, eos_id, add_bos, vocab.add_eos)
    return backend


def _byte_level_backend(vocab: GGUFVocab) -> tuple[HFTokenizer, bool]:
    pre = vocab.pre or "default"
    if pre not in _PRE_SPLITS:
        raise ModelLoadError(f"unsupported tokenizer pre-tokenizer: {describe(pre)} (tokenizer.ggml.pre)")
    regexes, ignore_merges, add_bos = _PRE_SPLITS[pre]
    backend = HFTokenizer(_bpe(vocab=_vocab(vocab.tokens), merges=vocab.merges, ignore_merges=ignore_merges))
    splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in regexes]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.pre_tokenizer = pre_tokenizers.Sequence([*splits, byte_level])
    backend.decoder = decoders.ByteLevel()
    return backend, add_bos


def _sentencepiece_backend(vocab: GGUFVocab) -> HFTokenizer:
    tokens, ids = vocab.tokens, _vocab(vocab.tokens)
    scores = vocab.scores or [0.0] * len(tokens)
    unk_id = vocab.ids["unknown"]
    unk = tokens[unk_id] if unk_id is not None else None
    backend = HFTokenizer(
        _bpe(vocab=ids, merges=_merges_from_scores(tokens, scores, ids), unk_token=unk, fuse_unk=True,
             byte_fallback=True)
    )  # fmt: skip
    prepend = "first" if vocab.add_space_prefix else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if vocab.add_space_prefix else steps)
    return backend


def call_tokenizers(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call into the Rust `tokenizers` library: its errors (plain Exception) and its panics (pyo3's PanicException,
    a BaseException that `except Exception` lets through) become a one-line ModelLoadError naming `what`."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise ModelLoadError(f"{what}: {_first_line(e)}") from None
    except BaseException as e:
        if type(e).__name__ != "PanicException":
            raise
        raise ModelLoadError(f"{what}: the tokenizers library panicked ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def _bpe(**kwargs: Any) -> models.BPE:
    return call_tokenizers("invalid GGUF tokenizer vocabulary", models.BPE, **kwargs)


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    return vocab


def _merges_from_scores(tokens: list[str], scores: list[float], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """SentencePiece BPE as ranked merges: a pair merges into the token it spells, better-scored tokens first.
    Only splits into two lengths that tokens have are tried: a hostile vocabulary with one huge token costs as much
    as its length, not its square."""
    lengths = {len(token) for token in vocab}
    sorted_lengths = sorted(lengths)
    ranked: list[tuple[float, int, int, str, str]] = []
    for token, score in zip(tokens, scores, strict=True):
        span = range(1, len(token)) if len(token) <= len(lengths) else sorted_lengths
        cuts = [i for i in span if 0 < i < len(token) and i in lengths and len(token) - i in lengths]
        pairs = [(token[:i], token[i:]) for i in cuts if token[:i] in vocab and token[i:] in vocab]
        pairs.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        ranked.extend((score, len(left), len(right), left, right) for left, right in pairs)
    ranked.sort(key=lambda merge: merge[:3], reverse=True)  # stable: ties keep vocabulary order
    return [(left, right) for *_, left, right in ranked]


def bos_eos_processor(
    backend: HFTokenizer, bos_id: int | None, eos_id: int | None, add_bos: bool, add_eos: bool
) -> processors.TemplateProcessing:
    bos = backend.id_to_token(bos_id) if add_bos and bos_id is not None else None
    eos = backend.id_to_token(eos_id) if add_eos and eos_id is not None else None
    single = " ".join(part for part in (bos and f"{bos}:0", "$A:0", eos and f"{eos}:0") if part)
    pair = " ".join(part for part in (single, bos and f"{bos}:1", "$B:1", eos and f"{eos}:1") if part)
    specials = [(token, token_id) for token, token_id in ((bos, bos_id), (eos, eos_id)) if token is not None]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def legacy_vocab_metadata(vocab: list[tuple[bytes, float]]) -> dict[str, Any]:
    """A GGML file's (piece bytes, score) vocabulary as the tokenizer.ggml.* metadata of a SentencePiece GGUF."""
    typed = [_legacy_token(i, text) for i, (text, _) in enumerate(vocab)]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [token for token, _ in typed],
        "tokenizer.ggml.scores": [score for _, score in vocab],
        "tokenizer.ggml.token_type": [kind for _, kind in typed],
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }


def _legacy_token(index: int, text: bytes) -> tuple[str, int]:
    if index < len(_LEGACY_SPECIALS):
        return _LEGACY_SPECIALS[index]
    if not text:
        return "", _CONTROL
    if index <= 258 and len(text) == 1:
        return f"<0x{text[0]:02X}>", _BYTE
    return text.decode("utf-8", errors="replace").replace(" ", "\u2581"), _NORMAL
