"""What the loader refuses, one hand-made file or metadata dict per rule (each a bug the GGUF fuzzer found: before its
fix the load raised a TypeError, RuntimeError, RecursionError or a Rust panic, hung, or printed a multi-line error).
The rules are the GGUF specification's and llama.cpp's (gguf.cpp, llama-model-loader.cpp)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mistralpy.errors import ModelLoadError, UnsupportedArchitectureError
from mistralpy.layers import rotary
from mistralpy.layers.rotary import INITIAL_ROWS, RotaryEmbedding
from mistralpy.loader import GGUFFile, open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.models import resolve_model_class
from mistralpy.quant.ggml_types import GGMLQuantizationType as Q
from mistralpy.quant.gguf_dequant import dequantize
from mistralpy.tokenizer import Tokenizer

from .fuzz.entry_mutations import nested_arrays
from .fuzz.files import GGML_TENSORS, write_bpe_gguf, write_spm_gguf
from .fuzz.gguf_edit import GGUFEntries, Value, parse_tensor_entry, tensor_entry
from .fuzz.layout import gguf_layout
from .ggml_writer import write_ggml


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("validation") / "bpe.gguf"
    write_bpe_gguf(path)
    return path.read_bytes()


def edited(data: bytes, tmp_path: Path, edit) -> Path:
    entries = GGUFEntries(data, gguf_layout(data))
    edit(entries)
    path = tmp_path / "edited.gguf"
    path.write_bytes(entries.build())
    return path


def retensor(entries: GGUFEntries, name: str, dims=None, qtype=None, offset_delta: int = 0) -> None:
    """Rewrite one tensor entry: its dims (GGUF order), type or offset."""
    index = next(i for i, raw in enumerate(entries.tensors) if parse_tensor_entry(raw)[0] == name.encode())
    old_name, old_dims, old_type, old_offset = parse_tensor_entry(entries.tensors[index])
    new = tensor_entry(old_name, old_dims if dims is None else dims, old_type if qtype is None else qtype,
                       old_offset + offset_delta)  # fmt: skip
    entries.tensors[index] = new


def load(path: Path) -> None:
    """A user's load, in the engine's order."""
    source = open_model_source(path)
    cfg = source.model_config()
    resolve_model_class(cfg)
    Tokenizer.from_gguf_metadata(source.metadata)
    load_model(source, torch.float32, weights="dequantized")


def test_the_unedited_file_loads(bpe, tmp_path):
    load(edited(bpe, tmp_path, lambda e: None))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda e: e.double_kv(0), "duplicate key 'general.architecture'"),  # was: the second value won
        (lambda e: e.set_kv_raw("general.deep", nested_arrays(10_000)), "nested more than 8 deep"),  # RecursionError
        (lambda e: retensor(e, "output_norm.weight", dims=[32, 1, 1, 1, 1]), "has 5 dimensions"),
        (lambda e: retensor(e, "blk.0.attn_q.weight", dims=[31, 32]), "rows of 31 are not whole Q8_0 blocks"),
        (lambda e: retensor(e, "output_norm.weight", offset_delta=1), "not a multiple of 64"),
        (lambda e: e.set_kv("general.alignment", Value("bool", True)), "invalid general.alignment True"),
    ],
)
def test_header(bpe, tmp_path, edit, message):
    with pytest.raises(ModelLoadError, match=message):
        GGUFFile(edited(bpe, tmp_path, edit))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("llama.attention.head_count", Value("u32", 0), "head_count is 0; expected 1 to"),  # was: ZeroDivisionError
        ("llama.attention.head_count", Value("str", "2"), "head_count must be an integer, not '2'"),
        ("llama.attention.head_count", Value("arr", [], "u32"), "head_count is an empty array"),  # max([])
        ("llama.embedding_length", Value("arr", [32, 32], "u32"), "must be an integer, not an array of 2"),
        ("llama.vocab_size", Value("bool", True), "vocab_size must be an integer, not True"),
        ("llama.context_length", Value("u32", 2**31), "context_length is 2147483648; expected 1 to 16777216"),
        ("llama.attention.layer_norm_rms_epsilon", Value("f32", math.nan), "must be a finite number, not nan"),
        ("llama.rope.freq_base", Value("f32", 0.0), "freq_base is 0.0; expected a positive number"),
        ("llama.attention.sliding_window", Value("arr", [2, 2], "u32"), "sliding_window must be an integer"),
        ("llama.expert_count", Value("u32", 2**31), "expert_count is 2147483648; expected 0 to 512"),
        ("tokenizer.ggml.bos_token_id", Value("u32", 10**6), "bos_token_id is 1000000; expected 0 to 42"),
        ("tokenizer.ggml.eos_token_id", Value("str", "12"), "eos_token_id must be an integer"),
    ],
)
def test_metadata(bpe, tmp_path, key, value, message):
    with pytest.raises(ModelLoadError, match=f"invalid model metadata in .*{message}"):
        GGUFFile(edited(bpe, tmp_path, lambda e: e.set_kv(key, value))).model_config()


def test_rope_scaling_without_factor(bpe, tmp_path):
    path = edited(bpe, tmp_path, lambda e: e.set_kv("llama.rope.scaling.type", Value("str", "linear")))
    with pytest.raises(UnsupportedArchitectureError, match="linear rope scaling needs a positive factor"):
        load(path)  # was: KeyError 'factor'


def test_block_count_past_the_layers_is_refused_before_building(bpe, tmp_path):
    path = edited(bpe, tmp_path, lambda e: e.set_kv("llama.block_count", Value("u32", 100_000)))
    with pytest.raises(ModelLoadError, match="declares 100000 layers, but the file holds the weights of 1"):
        load(path)  # was: a meta model of that many layers, built for minutes before the missing weights showed


@pytest.mark.parametrize(
    "edit, error, message",
    [
        # was: load_state_dict's multi-line size-mismatch RuntimeError
        (lambda e: e.set_kv("llama.embedding_length", Value("u32", 64)), ModelLoadError,
         r"'token_embd.weight' has shape \(43, 32\), but the llama metadata makes one of shape \(43, 64\)"),
        (lambda e: retensor(e, "output_norm.weight", dims=[32, 1]), ModelLoadError, r"shape \(1, 32\)"),
        # was: RuntimeError from reshaping k's rows into rotary pairs
        (lambda e: retensor(e, "blk.0.attn_k.weight", dims=[32, 15]), ModelLoadError,
         "the 15 rows of model.layers.0.self_attn.k_proj.weight are not 1 heads of rotary pairs"),
        # was: RuntimeError "cannot reshape tensor of 0 elements"
        (lambda e: retensor(e, "blk.0.attn_v.weight", dims=[32, 0]), ModelLoadError,
         "the parts of model.layers.0.self_attn.qkv_proj.weight have 48 rows; the metadata makes 64"),
        (lambda e: retensor(e, "output.weight", qtype=24), ModelLoadError, "'output.weight' is stored as I8"),
    ],
)  # fmt: skip
def test_weights_against_metadata(bpe, tmp_path, edit, error, message):
    with pytest.raises(error, match=message):
        load(edited(bpe, tmp_path, edit))


def test_a_declared_context_is_not_allocated_at_load(bpe, tmp_path):
    """A 15 kB file may declare 2**24 positions: the rotary tables hold INITIAL_ROWS of them until a step needs more
    (they were built for every declared position at load: 1.5 GB here)."""
    path = edited(bpe, tmp_path, lambda e: e.set_kv("llama.context_length", Value("u32", 2**24)))
    model = load_model(open_model_source(path), torch.float32, weights="dequantized")
    assert model.rotary.cos.shape == (INITIAL_ROWS, 8)


@pytest.mark.parametrize("scaling", [None, {"rope_type": "longrope", "original_max_position_embeddings": 16,
                                            "short_factor": [1.0] * 8, "long_factor": [1.5] * 8}])  # fmt: skip
def test_rotary_tables_grow_to_the_rows_built_at_once(monkeypatch, scaling):
    grown = RotaryEmbedding(16, 20_000, 10000.0, scaling)
    grown.build_cache()
    rows = torch.tensor([3, 9000, 9100])  # under LongRoPE, 9000 and 9100 are long-factor rows of positions 8984, 9084
    cos, sin = grown.cos_sin(rows, torch.float32)
    monkeypatch.setattr(rotary, "INITIAL_ROWS", 20_000)
    at_once = RotaryEmbedding(16, 20_000, 10000.0, scaling)
    at_once.build_cache()
    assert grown.cos.shape[0] < at_once.cos.shape[0]
    assert torch.equal(cos, at_once.cos[rows].unsqueeze(1)) and torch.equal(sin, at_once.sin[rows].unsqueeze(1))


def test_dequantize_no_rows():
    assert torch.equal(dequantize(torch.empty(0, 18, dtype=torch.uint8), Q.Q4_0, (0, 32)), torch.zeros(0, 32))


TOKENS = ["a", "b", "c", "ab", "<s>"]


def vocab(**change) -> dict:
    base = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": TOKENS, "tokenizer.ggml.token_type": [1] * 5,
            "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.bos_token_id": 4}  # fmt: skip
    return {**base, **{f"tokenizer.{k.replace('__', '.')}": v for k, v in change.items()}}


def test_the_unedited_vocabulary_loads():
    assert Tokenizer.from_gguf_metadata(vocab()).encode("abc") == [3, 2]


@pytest.mark.parametrize(
    "metadata, message",
    [
        (vocab(ggml__merges=["ab"]), r"merges\[0\] is 'ab', not two tokens and a space"),  # was: 8 lines from Rust
        (vocab(ggml__merges=["b c"]), "merge 0 \\('b c'\\) makes 'bc', which is not a token"),  # was: a Rust panic
        (vocab(ggml__token_type=[1, 1]), "token_type has 2 values; expected 5"),  # was: silently cut to 2
        (vocab(ggml__tokens=[]), "tokenizer.ggml.tokens is missing or empty"),
        (vocab(ggml__tokens=[1, 2]), "tokens must be an array of str values"),
        (vocab(ggml__bos_token_id=5), "bos_token_id is 5; expected 0 to 4"),
        (vocab(ggml__add_bos_token="yes"), "add_bos_token must be a bool, not 'yes'"),
        (vocab(chat_template=5), "chat_template must be a string, not 5"),
        (vocab(ggml__model="llama", ggml__scores=[0.0]), "scores has 1 values; expected 5"),  # was: ValueError (zip)
    ],
)
def test_tokenizer_metadata(metadata, message):
    with pytest.raises(ModelLoadError, match=message):
        Tokenizer.from_gguf_metadata(metadata)


def test_a_tokenizer_json_that_makes_tokenizers_panic(tmp_path):
    """The same merge in an HF folder's tokenizer.json: the panic (a BaseException) escaped `except Exception`."""
    model = {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": model}))
    with pytest.raises(ModelLoadError, match="cannot read .*tokenizer.json: the tokenizers library panicked"):
        Tokenizer.from_folder(tmp_path)


def test_a_huge_sentencepiece_token_is_not_quadratic():
    """A 200k-character token took ~40 s: every split of it was sliced and looked up. Only splits into lengths that
    tokens have are tried now; 10 s is the fuzz suite's limit for any load, not a speed target."""
    tokens = ["<unk>", "<s>", "</s>", "ab" * 100_000, "a", "b", "ab"]
    metadata = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": [0.0] * 7}
    started = time.monotonic()
    tok = Tokenizer.from_gguf_metadata(metadata)
    assert time.monotonic() - started < 10
    assert tok.token_to_id("ab" * 100_000) == 3


def test_spm_seed_file_loads(tmp_path):
    write_spm_gguf(tmp_path / "spm.gguf")
    load(tmp_path / "spm.gguf")


def test_ggml_error_names_a_tensor_briefly(tmp_path):
    """A garbage tensor name (here 3000 bytes) is shortened in the message: it was printed whole."""
    shape = GGML_TENSORS[1][1]
    path = tmp_path / "long.bin"
    tensors = [("x" * 3000, np.zeros(shape, dtype=np.float32), Q.F32, shape)]
    write_ggml(path, (3, 32, 256, 2, 1, 16, 0), [(b"a", 0.0)] * 3, tensors)
    with pytest.raises(ModelLoadError, match=r"unexpected tensor 'x+\.\.\. in") as info:
        open_model_source(path)
    assert len(str(info.value).replace(str(path), "")) < 300
