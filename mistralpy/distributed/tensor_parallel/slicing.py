"""One rank's slice of a weight, dense or in GGUF blocks: rows for column-parallel and vocab-parallel layers, input
columns (at a quantization block boundary) for row-parallel ones."""

from __future__ import annotations

import torch

from ...errors import ModelLoadError
from ...loader.quantized_weights import RawPart
from ...quant.ggml_types import GGML_QUANT_SIZES

Piece = torch.Tensor | RawPart


def rows_of(piece: Piece) -> int:
    return piece.shape[0]


def slice_rows(piece: Piece, start: int, stop: int) -> Piece:
    """Rows [start, stop): GGUF blocks never span rows, so a quantized weight's rows are whole blocks."""
    if isinstance(piece, RawPart):
        raw = piece.raw.reshape(piece.shape[0], -1)[start:stop].contiguous()
        return RawPart(raw, piece.qtype, (stop - start, *piece.shape[1:]))
    return piece[start:stop].contiguous()


def split_rows(piece: Piece, sizes: list[int], name: str) -> list[Piece]:
    """A weight stored fused (Phi-3's qkv_proj) as its parts, by their row counts."""
    if sum(sizes) != rows_of(piece):
        raise ModelLoadError(f"{name} has {rows_of(piece)} rows; its parts make {sum(sizes)}")
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    return [slice_rows(piece, a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def slice_columns(piece: Piece, start: int, stop: int, name: str) -> Piece:
    """Input columns [start, stop); a quantized weight's only at block boundaries."""
    if len(piece.shape) == 1:
        raise ModelLoadError(f"{name} is 1-D; it has no input columns to shard")
    if not isinstance(piece, RawPart):
        return piece[:, start:stop].contiguous()
    block, type_size = GGML_QUANT_SIZES[piece.qtype]
    if start % block or stop % block:
        raise ModelLoadError(
            f"{name}: input columns [{start}, {stop}) of a rank do not fall on {piece.qtype.name} block boundaries "
            f"(blocks of {block}); this tensor-parallel size cannot shard it"
        )
    raw = piece.raw.reshape(piece.shape[0], -1)[:, start // block * type_size : stop // block * type_size]
    return RawPart(raw.contiguous(), piece.qtype, (piece.shape[0], stop - start))
