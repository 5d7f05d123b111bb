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


def slice_columns(piece: Piece, rank: int, size: int, name: str) -> Piece:
    """Input columns of one rank out of `size` equal parts; a quantized weight's at a block boundary."""
    if len(piece.shape) == 1:
        raise ModelLoadError(f"{name} is 1-D; it has no input columns to shard")
    cols = piece.shape[1]
    if isinstance(piece, RawPart):
        block, type_size = GGML_QUANT_SIZES[piece.qtype]
        if cols % (block * size):
            raise ModelLoadError(
                f"{name}: its {cols} input columns do not split into {size} whole {piece.qtype.name} blocks of "
                f"{block}; tensor parallelism of {size} cannot shard it"
            )
        raw = piece.raw.reshape(piece.shape[0], -1)
        width = raw.shape[1] // size
        return RawPart(
            raw[:, rank * width : (rank + 1) * width].contiguous(), piece.qtype, (piece.shape[0], cols // size)
        )
    if cols % size:
        raise ModelLoadError(f"{name}: its {cols} input columns do not split into {size} equal parts")
    width = cols // size
    return piece[:, rank * width : (rank + 1) * width].contiguous()
