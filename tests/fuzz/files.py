"""The fuzzer's seeds: tiny valid Llama model files, written with gguf-py's writer under llama.cpp's tensor names (as
tests/helpers.py writes GGUFs), with random weights and a hand-made vocabulary of a few dozen tokens, so that a load
takes milliseconds.

- "bpe": a byte-level BPE tokenizer (merges, control tokens, a chat template), an untied output and a mix of block
  types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16), general.alignment 64;
- "spm": a SentencePiece tokenizer (scores, unknown token), tied embeddings, F16 / BF16 / Q4_K / F32 tensors;
- "ggml": a legacy ggjt v3 file (tests/ggml_writer.py's layout) with Q8_0 weights.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from ..ggml_writer import write_ggml
from ..helpers import random_blocks

Q = gguf.GGMLQuantizationType
HIDDEN, HEADS, KV_HEADS, CONTEXT = 32, 2, 1, 64
HEAD_DIM = HIDDEN // HEADS
CHAT_TEMPLATE = "{% for m in messages %}<s1>{{ m['content'] }}<s2>{% endfor %}"


def _bpe_vocab() -> tuple[list[str], list[int], list[str]]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ċ", "!", "."]
    merged = ["ab", "bc", "abc", "Ġa", "Ġab"]
    specials = [f"<s{i}>" for i in range(8)]
    tokens = letters + merged + specials
    types = [1] * (len(letters) + len(merged)) + [3] * len(specials)
    return tokens, types, ["a b", "b c", "ab c", "Ġ a", "Ġa b"]


def _spm_vocab() -> tuple[list[str], list[float], list[int]]:
    specials = ["<unk>", "<s>", "</s>"]
    pieces = ["▁", "a", "b", "c", "d", "e", "▁a", "ab", "▁ab", "cd", "<0x0A>", "<0x21>"]
    scores = [0.0] * 3 + [-float(i) for i in range(len(pieces))]
    types = [2, 3, 3] + [1] * 10 + [6, 6]
    return specials + pieces, scores, types


def _common_metadata(w: gguf.GGUFWriter, feed_forward: int, vocab: int) -> None:
    w.add_block_count(1)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(feed_forward)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)


class _Tensors:
    def __init__(self, writer: gguf.GGUFWriter, seed: int) -> None:
        self.writer, self.rng = writer, np.random.default_rng(seed)

    def add(self, name: str, shape: tuple[int, ...], qtype: Q = Q.F32) -> None:
        data = (0.1 * self.rng.standard_normal(shape)).astype(np.float32)
        if qtype == Q.F32:
            self.writer.add_tensor(name, data)
        elif qtype in (Q.Q4_K, Q.Q6_K):
            self.writer.add_tensor(name, random_blocks(qtype, *shape, seed=len(name)), raw_dtype=qtype)
        else:
            self.writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def _write(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_bpe_gguf(path: Path) -> None:
    tokens, types, merges = _bpe_vocab()
    ff = 64
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    _common_metadata(w, ff, len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 8)
    w.add_eos_token_id(len(tokens) - 7)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    t = _Tensors(w, 0)
    t.add("token_embd.weight", (len(tokens), HIDDEN), Q.Q8_0)
    t.add("output_norm.weight", (HIDDEN,))
    t.add("output.weight", (len(tokens), HIDDEN), Q.F16)
    t.add("blk.0.attn_norm.weight", (HIDDEN,))
    t.add("blk.0.attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), Q.Q8_0)
    t.add("blk.0.attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), Q.Q4_0)
    t.add("blk.0.attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), Q.Q8_0)
    t.add("blk.0.attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), Q.Q4_1)
    t.add("blk.0.ffn_norm.weight", (HIDDEN,))
    t.add("blk.0.ffn_gate.weight", (ff, HIDDEN), Q.Q5_0)
    t.add("blk.0.ffn_up.weight", (ff, HIDDEN), Q.Q5_1)
    t.add("blk.0.ffn_down.weight", (HIDDEN, ff), Q.Q8_0)
    _write(w)


def write_spm_gguf(path: Path) -> None:
    tokens, scores, types = _spm_vocab()
    ff = 256  # Q4_K rows are 256 wide
    w = gguf.GGUFWriter(str(path), "llama")
    _common_metadata(w, ff, len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_space_prefix(True)
    t = _Tensors(w, 1)
    t.add("token_embd.weight", (len(tokens), HIDDEN), Q.F16)
    t.add("output_norm.weight", (HIDDEN,))
    t.add("blk.0.attn_norm.weight", (HIDDEN,))
    t.add("blk.0.attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), Q.BF16)
    t.add("blk.0.attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), Q.F16)
    t.add("blk.0.attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), Q.F32)
    t.add("blk.0.attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), Q.F16)
    t.add("blk.0.ffn_norm.weight", (HIDDEN,))
    t.add("blk.0.ffn_gate.weight", (ff, HIDDEN), Q.F16)
    t.add("blk.0.ffn_up.weight", (ff, HIDDEN), Q.F16)
    t.add("blk.0.ffn_down.weight", (HIDDEN, ff), Q.Q4_K)
    _write(w)


GGML_TENSORS = [  # (GGML name, torch shape); 2-D weights are stored in Q8_0
    ("tok_embeddings.weight", ("vocab", HIDDEN)),
    ("norm.weight", (HIDDEN,)),
    ("output.weight", ("vocab", HIDDEN)),
    ("layers.0.attention_norm.weight", (HIDDEN,)),
    ("layers.0.attention.wq.weight", (HIDDEN, HIDDEN)),
    ("layers.0.attention.wk.weight", (HIDDEN, HIDDEN)),
    ("layers.0.attention.wv.weight", (HIDDEN, HIDDEN)),
    ("layers.0.attention.wo.weight", (HIDDEN, HIDDEN)),
    ("layers.0.ffn_norm.weight", (HIDDEN,)),
    ("layers.0.feed_forward.w1.weight", (64, HIDDEN)),
    ("layers.0.feed_forward.w2.weight", (HIDDEN, 64)),
    ("layers.0.feed_forward.w3.weight", (64, HIDDEN)),
]


def write_ggml_file(path: Path) -> None:
    """A ggjt v3 Llama (no GQA: the format records no KV head count) with a 20-piece vocabulary."""
    vocab = [(" \u2047 ".encode(), 0.0), (b"", 0.0), (b"", 0.0)]
    vocab += [(piece.encode(), -float(i)) for i, piece in enumerate([" ", "a", "b", "c", " a", "ab", " ab", "\n"])]
    vocab += [(bytes([b]), 0.0) for b in b"xyz!?.,:;"]
    rng = np.random.default_rng(2)
    tensors = []
    for name, shape in GGML_TENSORS:
        shape = tuple(len(vocab) if d == "vocab" else d for d in shape)
        data = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        qtype = Q.Q8_0 if len(shape) == 2 else Q.F32
        tensors.append((name, gguf.quants.quantize(data, qtype) if qtype != Q.F32 else data, qtype, shape))
    write_ggml(path, (len(vocab), HIDDEN, 256, HEADS, 1, HEAD_DIM, 7), vocab, tensors)


BASES = {
    "bpe": ("bpe.gguf", write_bpe_gguf),
    "spm": ("spm.gguf", write_spm_gguf),
    "ggml": ("ggml.bin", write_ggml_file),
}


def write_bases(folder: Path) -> dict[str, Path]:
    paths = {}
    for name, (file_name, write) in BASES.items():
        paths[name] = folder / file_name
        write(paths[name])
    return paths
