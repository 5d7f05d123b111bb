"""Tokenizer: encode/decode over a HF `tokenizers` backend built from tokenizer.json or GGUF vocab; chat templates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from .chat_template import render_chat_template
from .chat_template.family_defaults import family_chat_template
from .errors import ModelLoadError
from .gguf_tokenizer import bos_eos_processor, call_tokenizers, gguf_backend
from .gguf_vocab import read_vocab
from .loader.hf_folder import read_json_object

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
        extra_eos_token_ids: Iterable[int | None] = (),
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

    @property
    def backend(self) -> HFTokenizer:
        """The `tokenizers` tokenizer underneath (llguidance builds its view of the vocabulary from it)."""
        return self._backend

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any], chat_template: str | None = None) -> Tokenizer:
        """The GGUF file's vocabulary; `chat_template` replaces its template, which, where the file has none, is its
        family's released one (chat_template/family_defaults.py)."""
        vocab = read_vocab(metadata)
        own = vocab.chat_template or family_chat_template(metadata.get("general.architecture"))
        return cls(
            gguf_backend(vocab),
            bos_token_id=vocab.ids["bos"],
            eos_token_id=vocab.ids["eos"],
            extra_eos_token_ids=[vocab.ids["eot"], vocab.ids["eom"]],
            chat_template=chat_template if chat_template is not None else own,
            vocab_size=len(vocab.tokens),
        )

    @classmethod
    def from_folder(cls, path: str | Path, chat_template: str | None = None) -> Tokenizer:
        """tokenizer.json and its configuration files in `path`; `chat_template` replaces the folder's template."""
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ModelLoadError(f"no tokenizer.json in {folder}")
        backend = call_tokenizers(f"cannot read {tokenizer_file}", HFTokenizer.from_file, str(tokenizer_file))
        # a prompt is never cut or padded behind the caller's back (sentence encoders' files often set both): a too
        # long one is an error
        backend.no_truncation()
        backend.no_padding()
        config = read_json_object(folder / "tokenizer_config.json", missing_ok=True)
        bos_id, eos_id = (_token_id(backend, config.get(key)) for key in ("bos_token", "eos_token"))
        # tokenizer.json's post-processor decides, as in transformers 5; the config's flags only fill in a missing one
        if backend.post_processor is None:
            add_bos, add_eos = config.get("add_bos_token", False), config.get("add_eos_token", False)
            backend.post_processor = bos_eos_processor(backend, bos_id, eos_id, add_bos, add_eos)
        generation_eos = read_json_object(folder / "generation_config.json", missing_ok=True).get("eos_token_id")
        return cls(
            backend,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            extra_eos_token_ids=generation_eos if isinstance(generation_eos, list) else [generation_eos],
            chat_template=chat_template if chat_template is not None else _folder_chat_template(folder, config),
        )

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # encode_batch releases the GIL while it works (encode holds it throughout): a long prompt tokenized in a
        # worker thread then leaves the event loop and the engine thread running.
        return self._backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self._backend.id_to_token(token_id) for token_id in ids]

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        template: str | None = None,
        **kwargs: Any,
    ) -> str | list[int]:
        """Render `messages` with `template` (a checked template's text; default the model's); with `tokenize`, its
        ids (the template writes BOS itself)."""
        variables = {"bos_token": self.bos_token or "", "eos_token": self.eos_token or "", "tools": None,
                     "documents": None, **kwargs}  # fmt: skip
        source = template if template is not None else self.chat_template
        text = render_chat_template(source, messages, add_generation_prompt, **variables)
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


def _token_id(backend: HFTokenizer, value: Any) -> int | None:
    content = value.get("content") if isinstance(value, dict) else value  # AddedToken dicts or plain strings
    return backend.token_to_id(content) if isinstance(content, str) else None


def _folder_chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = read_json_object(folder / "chat_template.json", missing_ok=True).get(
        "chat_template", config.get("chat_template")
    )
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        template = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = template.get("default")
    return template if isinstance(template, str) else None
