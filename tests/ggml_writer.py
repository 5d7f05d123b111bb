"""Test helper: write legacy GGML (ggjt v3) Llama files as llama.cpp's convert.py and quantize did before GGUF.

The vocabulary is a real SentencePiece BPE model trained here on a small corpus, laid out like LLaMA's (<unk> <s> </s>
at 0-2, byte-fallback pieces <0x00>..<0xFF> at 3-258), and stored as convert.py stored LLaMA's: "▁" as a space, byte
pieces as the byte itself, <unk> as " \u2047 ", control pieces empty. sentencepiece itself is then the oracle of the
tokenizer built from the file.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q

GGJT_MAGIC = 0x67676A74
# llama.cpp's legacy ftype ("mostly ...") for each type the 2-D weights are stored in
FTYPES = {Q.F32: 0, Q.F16: 1, Q.Q4_0: 2, Q.Q4_1: 3, Q.Q8_0: 7, Q.Q5_0: 8, Q.Q5_1: 9}
# Hugging Face Llama names -> the original checkpoint names GGML files use
HF_TO_GGML = {
    "model.embed_tokens": "tok_embeddings",
    "model.norm": "norm",
    "lm_head": "output",
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
}
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello world! Grüße, Привет, 你好世界.",
    "  leading spaces,   runs of spaces\n\nand newlines, tabs\t\t, numbers 12345 3.14159 and 'quotes' I'm here.",
    "def f(x):\n    return x**2  # a small function, then some more words about the weather today",
]


def train_sentencepiece(folder: Path, vocab_size: int = 384) -> Path:
    """A LLaMA-like SentencePiece BPE model (byte fallback, identity normalization, dummy prefix)."""
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 20))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "spm"), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, minloglevel=2,
    )  # fmt: skip
    return folder / "spm.model"


def legacy_vocab(model_file: Path) -> list[tuple[bytes, float]]:
    """(piece bytes, score) per id, as llama.cpp's pre-GGUF convert.py wrote a SentencePiece vocabulary."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_unknown(i):
            text = " \u2047 ".encode()
        elif sp.is_control(i):
            text = b""
        elif sp.is_byte(i):
            text = bytes([int(piece[3:-1], 16)])
        else:
            text = piece.replace("\u2581", " ").encode()
        vocab.append((text, sp.get_score(i)))
    return vocab


def llama_tensors(hf_model: torch.nn.Module, qtype: Q) -> list[tuple[str, np.ndarray, Q, tuple[int, ...]]]:
    """(GGML name, stored bytes or floats, type, torch shape) for every weight: 2-D ones in `qtype`, norms in F32,
    q/k rows permuted for interleaved RoPE as convert.py did."""
    cfg = hf_model.config
    out = []
    for name, tensor in hf_model.state_dict().items():
        data = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            data = permute(data, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = permute(data, cfg.num_key_value_heads)
        stored = qtype if data.ndim == 2 else Q.F32
        blocks = gguf.quants.quantize(np.ascontiguousarray(data), stored) if stored != Q.F32 else data
        out.append((ggml_name(name), blocks, stored, tuple(data.shape)))
    return out


def ggml_name(hf_name: str) -> str:
    stem = hf_name.removesuffix(".weight").replace("model.layers.", "layers.")
    for hf, ggml in HF_TO_GGML.items():
        if stem.endswith(hf):
            return stem[: len(stem) - len(hf)] + ggml + ".weight"
    raise KeyError(hf_name)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_ggml(path: Path, hf_model: torch.nn.Module, vocab: list[tuple[bytes, float]], qtype: Q = Q.F32) -> None:
    """A HF Llama as a ggjt v3 file; the file keeps no KV head count, RMS epsilon, RoPE base or context length."""
    cfg = hf_model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    hparams = (len(vocab), cfg.hidden_size, 256, cfg.num_attention_heads, cfg.num_hidden_layers, head_dim)
    write_ggml(path, (*hparams, FTYPES[qtype]), vocab, llama_tensors(hf_model, qtype))


def write_ggml(
    path: Path,
    hparams: tuple[int, ...],
    vocab: list[tuple[bytes, float]],
    tensors: list[tuple[str, np.ndarray, Q, tuple[int, ...]]],
    magic: int = GGJT_MAGIC,
    version: int = 3,
) -> None:
    """The ggjt layout: magic, version, 7 u32 hyper-parameters, (len, bytes, f32 score) per piece, then per tensor
    n_dims, name length, type, dims (contiguous first), name, padding to 32 bytes, data."""
    with open(path, "wb") as f:
        f.write(struct.pack("<II", magic, version))
        f.write(struct.pack("<7I", *hparams))
        for text, score in vocab:
            f.write(struct.pack("<I", len(text)) + text + struct.pack("<f", score))
        for name, data, qtype, shape in tensors:
            encoded = name.encode()
            f.write(struct.pack(f"<3I{len(shape)}I", len(shape), len(encoded), int(qtype), *reversed(shape)))
            f.write(encoded)
            f.write(b"\0" * (-f.tell() % 32))
            raw = np.ascontiguousarray(data).tobytes()
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            assert len(raw) == math.prod(shape) // block * size, name
            f.write(raw)
