"""Where every field of a GGUF header (and of a legacy ggjt file's) lies, read from the formats' specifications,
independently of mistralpy: the fuzzer mutates a file field by field, entry by entry, and cuts it at the boundaries."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# GGUF value type id -> struct format of its scalar (8: string, 9: array)
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class Slot:
    """One field: `kind` is "u32" / "u64" (a count, length, type id, dimension or offset), "value" (a metadata
    scalar of struct format `fmt`) or "bytes" (a key, name or string's characters)."""

    offset: int
    size: int
    kind: str
    label: str
    fmt: str = ""


@dataclass(frozen=True)
class Entry:
    """One key/value pair or tensor-directory entry: its name and its bytes [start, end)."""

    name: str
    start: int
    end: int


@dataclass
class Layout:
    slots: list[Slot] = field(default_factory=list)
    kvs: list[Entry] = field(default_factory=list)
    tensors: list[Entry] = field(default_factory=list)  # GGML: a tensor's header, its padding and its data
    header_end: int = 0  # GGUF: after magic, version and counts; GGML: after the hyper-parameters
    info_end: int = 0  # GGUF: end of the tensor directory; GGML: end of the vocabulary
    data_start: int = 0
    alignment: int = 32

    def boundaries(self) -> list[int]:
        cuts = {0, 4, 8, self.header_end, self.info_end, self.data_start}
        for entry in self.kvs + self.tensors:
            cuts |= {entry.start, entry.end}
        return sorted(cuts)


class _Walker:
    def __init__(self, data: bytes, layout: Layout, pos: int = 0) -> None:
        self.data, self.pos, self.layout = data, pos, layout

    def int(self, kind: str, label: str) -> int:
        fmt = "<I" if kind == "u32" else "<Q"
        return self.scalar(fmt, kind, label)

    def scalar(self, fmt: str, kind: str, label: str) -> object:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.layout.slots.append(Slot(self.pos, struct.calcsize(fmt), kind, label, fmt))
        self.pos += struct.calcsize(fmt)
        return value

    def bytes(self, length: int, label: str) -> bytes:
        self.layout.slots.append(Slot(self.pos, length, "bytes", label))
        self.pos += length
        return self.data[self.pos - length : self.pos]

    def string(self, label: str) -> bytes:
        return self.bytes(self.int("u64", f"{label}.length"), label)

    def value(self, vtype: int, label: str) -> object:
        if vtype == STRING:
            return self.string(label)
        if vtype == ARRAY:
            item_type = self.int("u32", f"{label}.item_type")
            count = self.int("u64", f"{label}.count")
            return [self.value(item_type, f"{label}[{i}]") for i in range(count)]
        return self.scalar(SCALAR_FORMATS[vtype], "value", label)


def gguf_layout(data: bytes) -> Layout:
    """The fields and entries of a well-formed GGUF file's header, key/value section and tensor directory."""
    layout = Layout()
    w = _Walker(data, layout)
    w.int("u32", "magic")
    w.int("u32", "version")
    n_tensors = w.int("u64", "tensor_count")
    n_kv = w.int("u64", "kv_count")
    layout.header_end = w.pos
    for _ in range(n_kv):
        start = w.pos
        key = w.string("key").decode()
        value = w.value(w.int("u32", f"{key}.type"), key)
        layout.kvs.append(Entry(key, start, w.pos))
        if key == "general.alignment":
            layout.alignment = int(value)
    for _ in range(n_tensors):
        start = w.pos
        name = w.string("tensor.name").decode()
        n_dims = w.int("u32", f"{name}.n_dims")
        for d in range(n_dims):
            w.int("u64", f"{name}.dim{d}")
        w.int("u32", f"{name}.type")
        w.int("u64", f"{name}.offset")
        layout.tensors.append(Entry(name, start, w.pos))
    layout.info_end = w.pos
    layout.data_start = -(-w.pos // layout.alignment) * layout.alignment
    return layout


GGML_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34)}


def ggml_layout(data: bytes) -> Layout:
    """A ggjt v3 file: magic, version, 7 hyper-parameters, the vocabulary, then per tensor its header (n_dims, name
    length, type, dims, name), zero padding to 32 bytes and its data; `tensors` spans each header and its data."""
    layout = Layout()
    w = _Walker(data, layout)
    w.int("u32", "magic")
    w.int("u32", "version")
    names = ("n_vocab", "n_embd", "n_mult", "n_head", "n_layer", "n_rot", "ftype")
    n_vocab = [w.int("u32", name) for name in names][0]
    layout.header_end = w.pos
    for i in range(n_vocab):
        start = w.pos
        w.bytes(w.int("u32", f"piece[{i}].length"), f"piece[{i}]")
        w.scalar("<f", "value", f"piece[{i}].score")
        layout.kvs.append(Entry(f"piece[{i}]", start, w.pos))
    layout.info_end = layout.data_start = w.pos
    while w.pos < len(data):
        start, t = w.pos, f"tensor{len(layout.tensors)}"
        n_dims, name_len, qtype = (w.int("u32", f"{t}.{label}") for label in ("n_dims", "name.length", "type"))
        dims = [w.int("u32", f"{t}.dim{d}") for d in range(n_dims)]
        name = w.bytes(name_len, f"{t}.name").decode()
        w.pos += -w.pos % 32
        block, size = GGML_BLOCKS[qtype]
        n = 1
        for d in dims:
            n *= d
        w.pos += n // block * size
        layout.tensors.append(Entry(name, start, w.pos))
    return layout
