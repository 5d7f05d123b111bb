"""The tiny GGML test model and its files (GGML and GGUF, per tensor type), shared by the GGML test modules."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from gguf import GGMLQuantizationType as Q

from .ggml_writer import legacy_vocab, train_sentencepiece, write_llama_ggml
from .helpers import llama_to_gguf, make_tiny_llama


class Tiny(NamedTuple):
    folder: Path
    spm_model: Path
    vocab: list[tuple[bytes, float]]
    hf_model: torch.nn.Module


def make_tiny(tmp_path_factory) -> Tiny:
    """A tiny random Llama whose vocabulary is a small trained SentencePiece model's, as the old converter wrote it."""
    folder = tmp_path_factory.mktemp("ggml")
    spm_model = train_sentencepiece(folder)
    vocab = legacy_vocab(spm_model)
    return Tiny(folder, spm_model, vocab, make_tiny_llama(folder / "hf", vocab_size=len(vocab)))


def ggml_file(tiny: Tiny, qtype: Q = Q.F32) -> Path:
    path = tiny.folder / f"tiny-{qtype.name}.bin"
    if not path.exists():
        write_llama_ggml(path, tiny.hf_model, tiny.vocab, qtype)
    return path


def gguf_file(tiny: Tiny, qtype: Q = Q.F32) -> Path:
    path = tiny.folder / f"tiny-{qtype.name}.gguf"
    if not path.exists():
        llama_to_gguf(tiny.hf_model, path, qtypes=None if qtype == Q.F32 else {"": qtype})
    return path
