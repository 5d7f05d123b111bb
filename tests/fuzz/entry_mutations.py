"""Entry-level mutations of a GGUF file: whole key/value pairs and tensor entries dropped, doubled, retyped or
rewritten, and metadata a hostile or broken converter could write (wrong types, zero or huge sizes, bad ids)."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator

from .gguf_edit import GGUFEntries, Value, parse_tensor_entry, tensor_entry
from .layout import ARRAY, Layout

Edit = Callable[[GGUFEntries], None]

# Any key may get a value of any of these types.
RETYPED = [
    Value("u32", 0), Value("i32", -1), Value("u32", 2**32 - 1), Value("u64", 2**63), Value("u64", 2**64 - 1),
    Value("i64", -(2**63)), Value("f32", 1.5), Value("f32", math.nan), Value("f64", math.inf), Value("bool", True),
    Value("str", "12"), Value("arr", [], "u32"), Value("arr", [1, 2], "u32"), Value("arr", ["x"], "str"),
    Value("arr", [[1]], "arr"), Value("u8", 255), Value("i16", -300),
]  # fmt: skip
_SIZES = [Value("u32", 0), Value("u32", 1), Value("u32", 3), Value("u32", 7), Value("u32", 64), Value("u32", 4096),
          Value("u32", 2**24), Value("u32", 2**31), Value("u64", 2**40), Value("i32", -2), Value("arr", [], "u32"),
          Value("arr", [0], "u32"), Value("arr", [2, 2, 2], "u32")]  # fmt: skip
_IDS = [Value("u32", 10**6), Value("i32", -1), Value("u64", 2**64 - 1), Value("arr", [1, 2], "u32"), Value("str", "1")]
_ARCH = "llama."
CURATED: dict[str, list[Value]] = {
    "general.architecture": [Value("str", a) for a in ("gemma", "gemma2", "phi2", "phi3", "qwen2", "qwen3", "bert",
                                                       "", "LlamaForCausalLM", "llama\0")],
    "general.alignment": [Value("u32", a) for a in (0, 1, 3, 8, 16, 48, 128, 4096, 2**31, 2**32 - 1)]
    + [Value("u64", 64), Value("str", "64"), Value("f32", 64.0), Value("i32", -64)],
    **{_ARCH + k: _SIZES for k in ("block_count", "context_length", "embedding_length", "feed_forward_length",
                                   "attention.head_count", "attention.head_count_kv", "attention.key_length",
                                   "attention.value_length", "rope.dimension_count", "vocab_size",
                                   "attention.sliding_window", "expert_count", "expert_used_count")},
    _ARCH + "rope.freq_base": [Value("f32", v) for v in (0.0, -1.0, math.nan, math.inf, 1e-30)],
    _ARCH + "attention.layer_norm_rms_epsilon": [Value("f32", v) for v in (0.0, -1.0, math.nan, math.inf)],
    _ARCH + "rope.scaling.type": [Value("str", s) for s in ("linear", "yarn", "longrope", "su", "dynamic", "bogus")],
    _ARCH + "rope.scaling.factor": [Value("f32", v) for v in (0.0, -2.0, math.nan, math.inf, 4.0)],
    _ARCH + "rope.scale_linear": [Value("f32", v) for v in (0.0, -2.0, math.nan, 2.0)],
    _ARCH + "rope.scaling.original_context_length": [Value("u32", 0), Value("u32", 2**32 - 1)],
    _ARCH + "attn_logit_softcapping": [Value("f32", 0.0), Value("f32", math.nan)],
    "tokenizer.ggml.model": [Value("str", s) for s in ("bert", "", "gpt2", "llama", "t5", "rwkv")] + [Value("u32", 7)],
    "tokenizer.ggml.pre": [Value("str", "bogus"), Value("str", ""), Value("u32", 5)],
    "tokenizer.ggml.tokens": [Value("arr", [], "str"), Value("arr", [1, 2], "u32"), Value("arr", ["a"] * 40, "str"),
                              Value("arr", ["", "a", "b"], "str"), Value("arr", ["\ufffd" * 3, "x" * 4000], "str")],
    "tokenizer.ggml.token_type": [Value("arr", [], "i32"), Value("arr", [99] * 60, "i32"), Value("arr", [-1], "i32"),
                                  Value("arr", ["3"], "str"), Value("arr", [3] * 500, "i32")],
    "tokenizer.ggml.merges": [Value("arr", m, "str") for m in (["ab"], ["a b c"], ["x y", "q q"], [""], [" "],
                                                               ["a b"] * 3)] + [Value("arr", [1], "u32")],
    "tokenizer.ggml.scores": [Value("arr", [], "f32"), Value("arr", [math.nan] * 60, "f32"),
                              Value("arr", [1.0], "f32"), Value("arr", ["a"], "str"), Value("arr", [0.0] * 999, "f32")],
    "tokenizer.ggml.bos_token_id": _IDS,
    "tokenizer.ggml.eos_token_id": _IDS,
    "tokenizer.ggml.unknown_token_id": _IDS,
    "tokenizer.ggml.eot_token_id": _IDS,
    "tokenizer.ggml.add_bos_token": [Value("str", "yes"), Value("u8", 2), Value("bool", True)],
    "tokenizer.ggml.add_space_prefix": [Value("str", "no"), Value("bool", False)],
    "tokenizer.chat_template": [Value("u32", 5), Value("str", "{% for %}"), Value("str", "{{ x.__class__ }}")],
}  # fmt: skip


def _tensor_rewrites(raw: bytes, others: list[bytes]) -> Iterator[tuple[str, bytes]]:
    name, dims, qtype, offset = parse_tensor_entry(raw)
    other_offsets = sorted({parse_tensor_entry(o)[3] for o in others} - {offset})
    yield "dims reversed", tensor_entry(name, dims[::-1], qtype, offset)
    yield "a leading dim of 1", tensor_entry(name, [*dims, 1], qtype, offset)
    yield "a dim of 2 added", tensor_entry(name, [*dims, 2], qtype, offset)
    yield "first dim doubled", tensor_entry(name, [dims[0] * 2, *dims[1:]], qtype, offset)
    yield "last dim halved", tensor_entry(name, [*dims[:-1], max(dims[-1] // 2, 1)], qtype, offset)
    yield "a dim of 0", tensor_entry(name, [*dims[:-1], 0], qtype, offset)
    yield "dims 2**32 x 2**32", tensor_entry(name, [dims[0], 2**32, 2**32], qtype, offset)
    yield "dims 2**63 x 2", tensor_entry(name, [2**63, 2], qtype, offset)
    yield "dims 2**64-1", tensor_entry(name, [2**64 - 1], qtype, offset)
    yield "no dims", tensor_entry(name, [], qtype, offset)
    yield "5 dims", tensor_entry(name, [*dims, 1, 1, 1, 1][:5], qtype, offset)
    for new_type in (0, 1, 2, 8, 12, 14, 16, 30, 39, 4, 99):
        yield f"type {new_type}", tensor_entry(name, dims, new_type, offset)
    yield "offset + 1", tensor_entry(name, dims, qtype, offset + 1)
    yield "offset + 32", tensor_entry(name, dims, qtype, offset + 32)
    yield "offset 2**63", tensor_entry(name, dims, qtype, 2**63)
    yield "offset 2**64-64", tensor_entry(name, dims, qtype, 2**64 - 64)
    if other_offsets:
        yield "another tensor's offset", tensor_entry(name, dims, qtype, other_offsets[0])
    yield "renamed unknown", tensor_entry(name.replace(b"weight", b"wexght"), dims, qtype, offset)
    yield "renamed to layer 1", tensor_entry(name.replace(b"blk.0.", b"blk.1."), dims, qtype, offset)
    yield "renamed to a huge layer", tensor_entry(name.replace(b"blk.0.", b"blk.99999999999999999999."), dims,
                                                  qtype, offset)  # fmt: skip
    yield "renamed invalid UTF-8", tensor_entry(b"\xff\xfe" + name, dims, qtype, offset)


def entry_edits(layout: Layout, data: bytes) -> Iterator[tuple[str, str, Edit]]:
    """(category, description, edit) of every entry-level mutation of one file."""
    entries = GGUFEntries(data, layout)
    for i, key in enumerate(entries.keys):
        yield "entry", f"drop key {key}", lambda e, i=i: e.drop_kv(i)
        yield "entry", f"double key {key}", lambda e, i=i: e.double_kv(i)
        for value in RETYPED:
            yield "retype", f"{key} = {value!r}", lambda e, k=key, v=value: e.set_kv(k, v)
    for key, values in CURATED.items():
        for value in values:
            yield "metadata", f"{key} = {value!r}", lambda e, k=key, v=value: e.set_kv(k, v)
    yield "metadata", "10000 nested arrays", lambda e: e.set_kv_raw("general.nested", nested_arrays(10_000))
    yield "metadata", "a 200k-character token", lambda e: _long_token(e, 200_000)
    for i, name in enumerate(layout.tensors):
        yield "entry", f"drop tensor {name.name}", lambda e, i=i: e.tensors.pop(i)
        yield "entry", f"double tensor {name.name}", lambda e, i=i: e.tensors.insert(i, e.tensors[i])
        for desc, raw in _tensor_rewrites(entries.tensors[i], entries.tensors):
            yield "tensor", f"{name.name}: {desc}", lambda e, i=i, raw=raw: e.tensors.__setitem__(i, raw)


def nested_arrays(depth: int) -> bytes:
    """An array of one array of one array ... of one u32, encoded (type id and payload)."""
    raw = struct.pack("<IIQI", ARRAY, 4, 1, 1)
    for _ in range(depth):
        raw = struct.pack("<IIQ", ARRAY, ARRAY, 1) + raw[4:]
    return raw


def _long_token(entries: GGUFEntries, length: int) -> None:
    """A vocabulary whose first token is `length` characters long, its per-token arrays as long as it."""
    tokens = ["ab" * (length // 2), "a", "b", "ab"] + [f"t{i}" for i in range(60)]
    entries.set_kv("tokenizer.ggml.tokens", Value("arr", tokens, "str"))
    entries.set_kv("tokenizer.ggml.token_type", Value("arr", [1] * len(tokens), "i32"))
    if "tokenizer.ggml.scores" in entries.keys:
        entries.set_kv("tokenizer.ggml.scores", Value("arr", [0.0] * len(tokens), "f32"))
