"""GGMLFile: a legacy GGML model file (ggjt v3, llama.cpp's format before GGUF) read as the GGUF file that llama.cpp's
convert_llama_ggml_to_gguf.py writes from it: GGUF metadata and tensor names over the same memory-mapped bytes.

Layout, little-endian: magic "ggjt" (u32 0x67676a74), version u32 = 3, seven u32 hyper-parameters (n_vocab, n_embd,
n_mult, n_head, n_layer, n_rot, ftype), n_vocab times (u32 length, the piece's bytes, f32 score), then tensors to the
end of the file: u32 n_dims, u32 name length, u32 type, n_dims u32 dims (the contiguous one first), the name, zero
padding to a multiple of 32 bytes, the data. The block formats are GGUF's, and q/k rows are stored permuted for
interleaved RoPE as in GGUF. The format records no KV head count, RMS epsilon, RoPE base or context length: they come
from `GGMLParams`, defaulting as llama.cpp did for these files.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ..errors import InvalidRequestError, ModelLoadError, ModelNotFoundError
from ..gguf_metadata import describe
from ..gguf_tokenizer import legacy_vocab_metadata
from ..quant.ggml_types import GGML_QUANT_SIZES, GGMLQuantizationType
from .gguf import GGUFFile, _open_map
from .gguf_header import TensorEntry

if TYPE_CHECKING:
    from ..config import EngineConfig

Q = GGMLQuantizationType
SUPPORTED_TYPES = (Q.F32, Q.F16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)
DEFAULT_RMS_NORM_EPS = 5e-6  # llama.cpp's LLAMA_DEFAULT_RMS_EPS for these files (LLaMA-2 wants 1e-5, LLaMA-1 1e-6)
DEFAULT_ROPE_THETA = 10000.0
DEFAULT_CONTEXT_LENGTH = 2048  # convert_llama_ggml_to_gguf.py's default (LLaMA-1's; LLaMA-2 has 4096)
# Legacy (original Meta checkpoint) tensor names -> GGUF names, "{i}" the layer index.
GGML_TO_GGUF = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
    "layers.{i}.attention_norm.weight": "blk.{i}.attn_norm.weight",
    "layers.{i}.attention.wq.weight": "blk.{i}.attn_q.weight",
    "layers.{i}.attention.wk.weight": "blk.{i}.attn_k.weight",
    "layers.{i}.attention.wv.weight": "blk.{i}.attn_v.weight",
    "layers.{i}.attention.wo.weight": "blk.{i}.attn_output.weight",
    "layers.{i}.ffn_norm.weight": "blk.{i}.ffn_norm.weight",
    "layers.{i}.feed_forward.w1.weight": "blk.{i}.ffn_gate.weight",
    "layers.{i}.feed_forward.w2.weight": "blk.{i}.ffn_down.weight",
    "layers.{i}.feed_forward.w3.weight": "blk.{i}.ffn_up.weight",
}
_LAYER = re.compile(r"^layers\.(\d+)\.")
GGJT_MAGIC, GGJT_VERSION = 0x67676A74, 3  # "ggjt" as a little-endian u32: the bytes b"tjgg"
OLD_MAGICS = {0x67676D6C: "unversioned GGML", 0x67676D66: "GGMF"}
_ALIGNMENT = 32
_CONVERT = "only ggjt v3 files are read; convert it to GGUF (llama.cpp's convert_llama_ggml_to_gguf.py)"
_HParams = namedtuple("_HParams", "n_vocab n_embd n_mult n_head n_layer n_rot ftype")  # the file's seven u32s


class _Header(NamedTuple):
    hparams: _HParams
    vocab: list[tuple[bytes, float]]
    tensors: list[TensorEntry]  # under their GGML names


class _Reader:
    """Little-endian reads from a buffer; struct.error past its end."""

    def __init__(self, buf: mmap.mmap, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def u32s(self, count: int) -> tuple[int, ...]:
        values = struct.unpack_from(f"<{count}I", self.buf, self.pos)
        self.pos += 4 * count
        return values

    def take(self, n_bytes: int) -> bytes:
        if self.pos + n_bytes > len(self.buf):
            raise struct.error(f"{n_bytes} bytes at {self.pos} run past the end of the file")
        self.pos += n_bytes
        return self.buf[self.pos - n_bytes : self.pos]


def _parse(buf: mmap.mmap) -> _Header:
    """The hyper-parameters, vocabulary and tensor directory of a ggjt file whose magic and version were checked."""
    r = _Reader(buf, 8)
    hparams = _HParams(*r.u32s(7))
    if hparams.n_vocab * 8 > len(buf):  # each entry takes 8 bytes or more: a garbage count fails here, at once
        raise ValueError(f"n_vocab {hparams.n_vocab} does not fit in the file")
    vocab = []
    for _ in range(hparams.n_vocab):
        text = r.take(r.u32s(1)[0])
        vocab.append((text, struct.unpack("<f", r.take(4))[0]))
    tensors = []
    while r.pos < len(buf):
        tensors.append(_tensor_entry(r))
    return _Header(hparams, vocab, tensors)


def _tensor_entry(r: _Reader) -> TensorEntry:
    n_dims, name_len, raw_type = r.u32s(3)
    if not 1 <= n_dims <= 4:
        raise ValueError(f"a tensor at byte {r.pos - 12} has {n_dims} dimensions")
    dims = r.u32s(n_dims)
    name = r.take(name_len).decode("utf-8", errors="replace")
    r.pos += -r.pos % _ALIGNMENT
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise ValueError(f"tensor {describe(name)} has unknown type id {raw_type}") from None
    block, type_size = GGML_QUANT_SIZES[qtype]
    if dims[0] % block:
        raise ValueError(f"tensor {describe(name)}: rows of {dims[0]} are not whole {qtype.name} blocks")
    n_bytes = math.prod(dims) // block * type_size
    offset = r.pos
    r.take(n_bytes)
    return TensorEntry(name, qtype, tuple(reversed(dims)), offset, n_bytes)


@dataclass(frozen=True)
class GGMLParams:
    """Hyper-parameters a GGML file does not record; None takes llama.cpp's legacy default."""

    gqa: int | None = None  # grouped-query factor n_head / n_head_kv (default 1; 8 for LLaMA-2 70B)
    rope_theta: float | None = None  # RoPE base (default 10000)
    rms_norm_eps: float | None = None  # RMSNorm epsilon (default 5e-6)
    context_length: int | None = None  # (default 2048)

    @classmethod
    def from_engine_config(cls, config: EngineConfig) -> GGMLParams:
        """An EngineConfig's GGML options; its max_model_len is the context length the old format lacks."""
        return cls(config.gqa, config.rope_theta, config.rms_norm_eps, config.max_model_len)

    def given(self) -> list[str]:
        """The options that apply to GGML files only and are set (a context length every format takes)."""
        return [name for name in ("gqa", "rope_theta", "rms_norm_eps") if getattr(self, name) is not None]


def has_ggml_magic(path: Path) -> bool:
    """Whether the file starts with a GGML magic: ggjt, or the older unversioned ggml / ggmf."""
    try:
        head = _first_bytes(path, 4)
    except OSError:
        return False
    return len(head) == 4 and struct.unpack("<I", head)[0] in (GGJT_MAGIC, *OLD_MAGICS)


def _first_bytes(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


class GGMLFile(GGUFFile):
    """A ggjt v3 Llama file, presented as GGUF: architecture "llama", GGUF metadata keys (tokenizer.ggml.* from its
    vocabulary) and GGUF tensor names, so that everything reading a GGUFFile reads it too."""

    def __init__(self, path: str | Path, params: GGMLParams | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ModelNotFoundError(f"model file not found: {self.path}")
        if self.path.is_dir():
            raise ModelLoadError(f"not a GGML file (a directory): {self.path}")
        header = self._read_header()
        self.version = GGJT_VERSION
        self._tensors = _gguf_tensors(header, self.path)
        self.metadata = {
            **_llama_metadata(header, self._tensors, params or GGMLParams(), self.path),
            **legacy_vocab_metadata(header.vocab),
        }
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8)

    def __repr__(self) -> str:
        return f"GGMLFile({str(self.path)!r}, version={self.version})"

    def _read_header(self) -> _Header:
        magic, version = struct.unpack("<II", _first_bytes(self.path, 8).ljust(8, b"\0"))
        if magic in OLD_MAGICS:
            raise ModelLoadError(f"{self.path} is a {OLD_MAGICS[magic]} file: {_CONVERT}")
        if magic != GGJT_MAGIC:
            raise ModelLoadError(f"not a GGML file: {self.path}")
        if version != GGJT_VERSION:
            raise ModelLoadError(f"{self.path} is a ggjt v{version} file: {_CONVERT}")
        try:
            self._map = _open_map(self.path)
            return _parse(self._map)
        except (struct.error, OSError, ValueError) as e:
            raise ModelLoadError(f"truncated or corrupt GGML file: {self.path} ({e})") from None


def _gguf_tensors(header: _Header, path: Path) -> dict[str, TensorEntry]:
    tensors: dict[str, TensorEntry] = {}
    for entry in header.tensors:
        if entry.qtype not in SUPPORTED_TYPES:
            names = ", ".join(t.name for t in SUPPORTED_TYPES)
            raise ModelLoadError(
                f"tensor {describe(entry.name)} in {path} has type {entry.qtype.name}; GGML files are read with "
                f"{names} tensors: convert it to GGUF (llama.cpp's convert_llama_ggml_to_gguf.py)"
            )
        name = _gguf_name(entry.name)
        if name is None:
            raise ModelLoadError(
                f"unexpected tensor {describe(entry.name)} in {path}: GGML files are read as Llama models"
            )
        if name in tensors:
            raise ModelLoadError(f"duplicate tensor {describe(entry.name)} in {path}")
        tensors[name] = TensorEntry(name, entry.qtype, entry.shape, entry.offset, entry.n_bytes)
    return tensors


def _gguf_name(name: str) -> str | None:
    m = _LAYER.match(name)
    if m is None:
        return GGML_TO_GGUF.get(name)
    template = GGML_TO_GGUF.get("layers.{i}." + name[m.end() :])
    return template.format(i=m.group(1)) if template else None


def _llama_metadata(header: _Header, tensors: dict[str, TensorEntry], params: GGMLParams, path: Path) -> dict[str, Any]:
    hp = header.hparams
    if hp.n_head == 0 or hp.n_embd % hp.n_head or hp.n_rot != hp.n_embd // hp.n_head:
        raise ModelLoadError(
            f"invalid hyper-parameters in {path}: n_embd {hp.n_embd}, n_head {hp.n_head}, n_rot {hp.n_rot}"
        )
    embeddings, gate = tensors.get("token_embd.weight"), tensors.get("blk.0.ffn_gate.weight")
    if embeddings is None or embeddings.shape[0] != hp.n_vocab or gate is None:
        raise ModelLoadError(f"{path} lacks tok_embeddings (of n_vocab {hp.n_vocab} rows) or layers.0.feed_forward.w1")
    return {
        "general.architecture": "llama",
        "general.file_type": hp.ftype,
        "llama.vocab_size": hp.n_vocab,
        "llama.context_length": params.context_length or DEFAULT_CONTEXT_LENGTH,
        "llama.embedding_length": hp.n_embd,
        "llama.block_count": hp.n_layer,
        # from the tensor, as the converter does: n_mult's formula gives it for LLaMA-1 only (70B needs a 1.3 factor)
        "llama.feed_forward_length": gate.shape[0],
        "llama.rope.dimension_count": hp.n_rot,
        "llama.attention.head_count": hp.n_head,
        "llama.attention.head_count_kv": _kv_heads(hp.n_head, hp.n_rot, tensors, params.gqa, path),
        "llama.attention.layer_norm_rms_epsilon": params.rms_norm_eps or DEFAULT_RMS_NORM_EPS,
        "llama.rope.freq_base": params.rope_theta or DEFAULT_ROPE_THETA,
    }


def _kv_heads(n_head: int, head_dim: int, tensors: dict[str, TensorEntry], gqa: int | None, path: Path) -> int:
    gqa = gqa or 1
    if n_head % gqa:
        raise InvalidRequestError(f"gqa {gqa} does not divide the {n_head} attention heads of {path}")
    n_kv_head = n_head // gqa
    k_rows = tensors["blk.0.attn_k.weight"].shape[0] if "blk.0.attn_k.weight" in tensors else n_kv_head * head_dim
    if k_rows != n_kv_head * head_dim:
        # the file cannot say; its key projection's shape shows what the user has to
        hint = f": set gqa (--gqa) to {n_head * head_dim // k_rows}" if (n_head * head_dim) % k_rows == 0 else ""
        raise ModelLoadError(
            f"{path}: layers.0.attention.wk has {k_rows} rows, but gqa {gqa} means {n_kv_head} KV heads of "
            f"{head_dim}{hint}"
        )
    return n_kv_head
