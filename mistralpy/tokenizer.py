"""Tokenizer: encode/decode over a HF `tokenizers` backend built from tokenizer.json or GGUF vocab; chat templates."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from .errors import InvalidRequestError, ModelLoadError

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
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4  # llama.cpp token types
# Markers that end a turn in common chat templates: a template that writes one should also stop generation on it.
_END_OF_TURN_TEXTS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>")


class Tokenizer:
    """Text <-> token ids for one model, plus its chat template."""

    def __init__(
        self,
        backend: HFTokenizer,
        *,
        bos_token_id: int | None,
        eos_token_id: int | None,
        extra_eos_token_ids: Iterable[int] = (),
        chat_template: str | None = None,
        vocab_size: int | None = None,
    ) -> None:
        self._backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.vocab_size = vocab_size if vocab_size is not None else backend.get_vocab_size(with_added_tokens=True)
        self.chat_template = chat_template
        added = backend.get_added_tokens_decoder()
        self.all_special_ids = sorted(token_id for token_id, token in added.items() if token.special)
        self.bos_token = backend.id_to_token(bos_token_id) if bos_token_id is not None else None
        self.eos_token = backend.id_to_token(eos_token_id) if eos_token_id is not None else None
        self.eos_token_ids = frozenset(self._stop_ids(extra_eos_token_ids))
        self._template: jinja2.Template | None = None

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any]) -> Tokenizer:
        if "tokenizer.ggml.tokens" not in metadata:
            raise ModelLoadError("GGUF metadata has no tokenizer (tokenizer.ggml.tokens is missing)")
        extra = [metadata.get(f"tokenizer.ggml.{name}_token_id") for name in ("eot", "eom")]
        return cls(
            _gguf_backend(metadata),
            bos_token_id=metadata.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=metadata.get("tokenizer.ggml.eos_token_id"),
            extra_eos_token_ids=extra,
            chat_template=metadata.get("tokenizer.chat_template"),
            vocab_size=len(metadata["tokenizer.ggml.tokens"]),
        )

    @classmethod
    def from_folder(cls, path: str | Path) -> Tokenizer:
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ModelLoadError(f"no tokenizer.json in {folder}")
        try:
            backend = HFTokenizer.from_file(str(tokenizer_file))
        except Exception as e:  # the Rust side raises plain Exception
            raise ModelLoadError(f"cannot read {tokenizer_file}: {e}") from None
        config = _read_json(folder / "tokenizer_config.json")
        bos_id, eos_id = (_token_id(backend, config.get(key)) for key in ("bos_token", "eos_token"))
        # tokenizer.json's post-processor decides, as in transformers 5; the config's flags only fill in a missing one
        if backend.post_processor is None:
            add_bos, add_eos = config.get("add_bos_token", False), config.get("add_eos_token", False)
            backend.post_processor = _bos_eos_processor(backend, bos_id, eos_id, add_bos, add_eos)
        generation_eos = _read_json(folder / "generation_config.json").get("eos_token_id")
        return cls(
            backend,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            extra_eos_token_ids=generation_eos if isinstance(generation_eos, list) else [generation_eos],
            chat_template=_folder_chat_template(folder, config),
        )

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self._backend.id_to_token(token_id) for token_id in ids]

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, tokenize: bool = False, **kwargs: Any
    ) -> str | list[int]:
        """Render `messages` with the model's template; with `tokenize`, its ids (the template writes BOS itself)."""
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        variables = {"bos_token": self.bos_token or "", "eos_token": self.eos_token or "", "tools": None, **kwargs}
        try:
            text = self._template.render(
                messages=_normalize_messages(messages), add_generation_prompt=add_generation_prompt, **variables
            )
        except InvalidRequestError:
            raise
        except Exception as e:  # templates fail with TemplateError, and with TypeError etc. on odd messages
            raise InvalidRequestError(f"chat template error: {e}") from None
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def _stop_ids(self, extra: Iterable[int | None]) -> set[int]:
        ids = {token_id for token_id in extra if isinstance(token_id, int)}
        if self.eos_token_id is not None:
            ids.add(self.eos_token_id)
        for text in _END_OF_TURN_TEXTS:
            token_id = self._backend.token_to_id(text)
            if token_id is not None and self.chat_template and text in self.chat_template:
                ids.add(token_id)
        return ids


# ---- GGUF vocabulary -> tokenizers backend -------------------------------------------------------------------------


def _gguf_backend(metadata: dict[str, Any]) -> HFTokenizer:
    model_type = metadata.get("tokenizer.ggml.model")
    if model_type == "gpt2":
        backend, add_bos = _byte_level_backend(metadata)
    elif model_type == "llama":
        backend, add_bos = _sentencepiece_backend(metadata), True
    else:
        raise ModelLoadError(f"unsupported tokenizer model: {model_type!r} (supported: 'gpt2', 'llama')")
    tokens, types = metadata["tokenizer.ggml.tokens"], metadata.get("tokenizer.ggml.token_type") or []
    # control tokens are special (matched whole, skipped on decode); user-defined ones are matched whole but kept
    typed = list(zip(tokens, types, strict=False))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, kind in typed
                                if kind in (_UNKNOWN, _CONTROL)])  # fmt: skip
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t, kind in typed if kind == _USER_DEFINED])
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", add_bos)
    add_eos = metadata.get("tokenizer.ggml.add_eos_token", False)
    bos_id, eos_id = metadata.get("tokenizer.ggml.bos_token_id"), metadata.get("tokenizer.ggml.eos_token_id")
    backend.post_processor = _bos_eos_processor(backend, bos_id, eos_id, add_bos, add_eos)
    return backend


def _byte_level_backend(metadata: dict[str, Any]) -> tuple[HFTokenizer, bool]:
    pre = metadata.get("tokenizer.ggml.pre") or "default"
    if pre not in _PRE_SPLITS:
        raise ModelLoadError(f"unsupported tokenizer pre-tokenizer: {pre!r} (tokenizer.ggml.pre)")
    regexes, ignore_merges, add_bos = _PRE_SPLITS[pre]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    backend = HFTokenizer(_bpe(vocab=_vocab(metadata), merges=merges, ignore_merges=ignore_merges))
    splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in regexes]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.pre_tokenizer = pre_tokenizers.Sequence([*splits, byte_level])
    backend.decoder = decoders.ByteLevel()
    return backend, add_bos


def _sentencepiece_backend(metadata: dict[str, Any]) -> HFTokenizer:
    tokens, vocab = metadata["tokenizer.ggml.tokens"], _vocab(metadata)
    scores = metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else None
    backend = HFTokenizer(
        _bpe(vocab=vocab, merges=_merges_from_scores(tokens, scores, vocab), unk_token=unk, fuse_unk=True,
             byte_fallback=True)
    )  # fmt: skip
    add_prefix = metadata.get("tokenizer.ggml.add_space_prefix", True)
    prepend = "first" if add_prefix else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if add_prefix else steps)
    return backend


def _bpe(**kwargs: Any) -> models.BPE:
    try:
        return models.BPE(**kwargs)
    except Exception as e:  # the Rust side raises plain Exception
        raise ModelLoadError(f"invalid GGUF tokenizer vocabulary: {e}") from None


def _vocab(metadata: dict[str, Any]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for index, token in enumerate(metadata["tokenizer.ggml.tokens"]):
        vocab.setdefault(token, index)
    return vocab


def _merges_from_scores(tokens: list[str], scores: list[float], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """SentencePiece BPE as ranked merges: a pair merges into the token it spells, better-scored tokens first."""
    ranked: list[tuple[float, int, int, str, str]] = []
    for token, score in zip(tokens, scores, strict=True):
        pairs = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        pairs.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        ranked.extend((score, len(left), len(right), left, right) for left, right in pairs)
    ranked.sort(key=lambda merge: merge[:3], reverse=True)  # stable: ties keep vocabulary order
    return [(left, right) for *_, left, right in ranked]


def _bos_eos_processor(
    backend: HFTokenizer, bos_id: int | None, eos_id: int | None, add_bos: bool, add_eos: bool
) -> processors.TemplateProcessing:
    bos = backend.id_to_token(bos_id) if add_bos and bos_id is not None else None
    eos = backend.id_to_token(eos_id) if add_eos and eos_id is not None else None
    single = " ".join(part for part in (bos and f"{bos}:0", "$A:0", eos and f"{eos}:0") if part)
    pair = " ".join(part for part in (single, bos and f"{bos}:1", "$B:1", eos and f"{eos}:1") if part)
    specials = [(token, token_id) for token, token_id in ((bos, bos_id), (eos, eos_id)) if token is not None]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


# ---- tokenizer.json folders ----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def _token_id(backend: HFTokenizer, value: Any) -> int | None:
    content = value.get("content") if isinstance(value, dict) else value  # AddedToken dicts or plain strings
    return backend.token_to_id(content) if isinstance(content, str) else None


def _folder_chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = _read_json(folder / "chat_template.json").get("chat_template", config.get("chat_template"))
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        template = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = template.get("default")
    return template if isinstance(template, str) else None


# ---- chat templates ------------------------------------------------------------------------------------------------


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    # Jinja's own tojson escapes HTML characters and non-ASCII, which templates trained with transformers never saw
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _compile_template(source: str | None) -> jinja2.Template:
    if not source:
        raise InvalidRequestError("this model has no chat template; send a plain prompt instead of chat messages")
    # the same environment as transformers, so templates written for it render identically
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise InvalidRequestError(f"the model's chat template does not parse: {e}") from None


def _normalize_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    return [_normalize_message(index, message) for index, message in enumerate(messages)]


def _normalize_message(index: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise InvalidRequestError(f"messages[{index}] must be an object with 'role' and 'content'")
    if not isinstance(message.get("role"), str) or not message["role"]:
        raise InvalidRequestError(f"messages[{index}].role must be a non-empty string")
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(_text_part(index, part) for part in content)
    elif content is None and not message.get("tool_calls"):
        raise InvalidRequestError(f"messages[{index}] has no 'content'")
    elif content is not None and not isinstance(content, str):
        raise InvalidRequestError(f"messages[{index}].content must be a string or a list of text parts")
    return {**message, "content": content}


def _text_part(index: int, part: Any) -> str:
    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise InvalidRequestError(f"messages[{index}].content: only text parts are supported, got {kind!r}")
    return part["text"]
