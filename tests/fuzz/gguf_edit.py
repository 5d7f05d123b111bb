"""Rebuild a GGUF file from its entries with one of them changed, dropped, doubled or added: the fuzzer's entry-level
mutations (a value of another type, a key missing, a tensor twice...), encoded by the GGUF specification."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .layout import ARRAY, SCALAR_FORMATS, STRING, Layout

T = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8, "arr": 9, "u64": 10,
     "i64": 11, "f64": 12}  # fmt: skip


@dataclass(frozen=True)
class Value:
    """A typed GGUF value; an array's `item` names its element type."""

    vtype: str
    value: object
    item: str = ""

    def __repr__(self) -> str:
        return f"{self.vtype}[{self.item}]({self.value!r})"[:80] if self.item else f"{self.vtype}({self.value!r})"[:80]


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _payload(vtype: int, value: object, item: int = 0) -> bytes:
    if vtype == STRING:
        return _string(value)
    if vtype == ARRAY:
        return struct.pack("<IQ", item, len(value)) + b"".join(_payload(item, v) for v in value)
    return struct.pack(SCALAR_FORMATS[vtype], value)


def encode_value(v: Value) -> bytes:
    """The type id and payload of a value."""
    return struct.pack("<I", T[v.vtype]) + _payload(T[v.vtype], v.value, T.get(v.item, 0))


def kv_entry(key: str, value: Value) -> bytes:
    return _string(key) + encode_value(value)


def tensor_entry(name: str | bytes, dims: list[int], qtype: int, offset: int) -> bytes:
    """A tensor-directory entry; `dims` in GGUF order (the contiguous one first)."""
    return _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, qtype, offset)


def parse_tensor_entry(raw: bytes) -> tuple[bytes, list[int], int, int]:
    (length,) = struct.unpack_from("<Q", raw)
    name = raw[8 : 8 + length]
    (n_dims,) = struct.unpack_from("<I", raw, 8 + length)
    dims = list(struct.unpack_from(f"<{n_dims}Q", raw, 12 + length))
    qtype, offset = struct.unpack_from("<IQ", raw, 12 + length + 8 * n_dims)
    return name, dims, qtype, offset


class GGUFEntries:
    """A GGUF file as its raw key/value entries, tensor entries and data: edit the lists, then `build()`."""

    def __init__(self, data: bytes, layout: Layout) -> None:
        self.head = data[:8]  # magic and version
        self.kvs = [data[e.start : e.end] for e in layout.kvs]
        self.keys = [e.name for e in layout.kvs]
        self.tensors = [data[e.start : e.end] for e in layout.tensors]
        self.data = data[layout.data_start :]
        self.alignment = layout.alignment

    def set_kv(self, key: str, value: Value) -> GGUFEntries:
        entry = kv_entry(key, value)
        if key in self.keys:
            self.kvs[self.keys.index(key)] = entry
        else:
            self.kvs.append(entry)
            self.keys.append(key)
        return self

    def set_kv_raw(self, key: str, encoded: bytes) -> None:
        self.kvs.append(_string(key) + encoded)
        self.keys.append(key)

    def drop_kv(self, index: int) -> None:
        del self.kvs[index], self.keys[index]

    def double_kv(self, index: int) -> None:
        self.kvs.insert(index, self.kvs[index])
        self.keys.insert(index, self.keys[index])

    def build(self) -> bytes:
        header = self.head + struct.pack("<QQ", len(self.tensors), len(self.kvs))
        body = header + b"".join(self.kvs) + b"".join(self.tensors)
        return body + b"\0" * (-len(body) % self.alignment) + self.data
