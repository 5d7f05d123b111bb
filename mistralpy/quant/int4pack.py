"""torch's CPU int4 kernel (`aten._weight_int4pack_mm_for_cpu`): packing 4-bit codes and reading them back.

The kernel computes y = x @ W^T with W[n, k] = (code[n, k] - 8) * scale[g, n] + zero[g, n] for groups g of
`group` columns, in float32 from bf16 activations, scales and zeros. The packed layout depends on the CPU capability
torch was dispatched to, so the layouts below are checked against the packing op before `unpack_codes` trusts one.
"""

from __future__ import annotations

import functools

import torch

ROW_BLOCK = 64  # rows are padded to a multiple of the kernel's widest row block, so every block is a full one


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """(rows, cols) codes in [0, 16), rows a multiple of ROW_BLOCK -> the kernel's packed (rows, cols / 2) uint8.

    Row blocks are packed independently, so slices of rows (multiples of ROW_BLOCK) can be packed one at a time."""
    assert codes.shape[0] % ROW_BLOCK == 0, codes.shape
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)


def int4_mm(x: torch.Tensor, packed: torch.Tensor, scale_zeros: torch.Tensor, group: int = 32) -> torch.Tensor:
    """x (m, cols) @ W^T for the packed W; scale_zeros (cols // group, rows, 2) in x's dtype."""
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scale_zeros)


def _unpack_lanes(packed: torch.Tensor, rows: int, cols: int, block: int) -> torch.Tensor:
    # Vectorised layouts: per row block and column, block/2 bytes; the low nibbles hold the first half of the
    # block's rows, the high nibbles the second half (AVX512: block 64, AVX2: block 32).
    b = packed.reshape(rows // block, cols, 1, block // 2)
    nib = torch.cat([b & 0x0F, b >> 4], dim=2).reshape(rows // block, cols, block)
    return nib.permute(0, 2, 1).reshape(rows, cols)


def _unpack_pairs(packed: torch.Tensor, rows: int, cols: int, block: int) -> torch.Tensor:
    # Scalar layout: per row block and column, byte j holds rows 2j (low nibble) and 2j + 1 (high nibble).
    b = packed.reshape(rows // block, cols, block // 2, 1)
    nib = torch.cat([b & 0x0F, b >> 4], dim=3).reshape(rows // block, cols, block)
    return nib.permute(0, 2, 1).reshape(rows, cols)


_LAYOUTS = {
    "lanes64": functools.partial(_unpack_lanes, block=64),
    "lanes32": functools.partial(_unpack_lanes, block=32),
    "pairs32": functools.partial(_unpack_pairs, block=32),
}
_BLOCK_ROWS = {"lanes64": 64, "lanes32": 32, "pairs32": 32}


@functools.cache
def _detected_layout() -> str | None:
    probe = torch.randint(0, 16, (2 * ROW_BLOCK, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = pack_codes(probe)
    for name, unpack in _LAYOUTS.items():
        if torch.equal(unpack(packed, *probe.shape), probe):
            return name
    return None


def unpack_codes(packed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The (rows, cols) uint8 codes held by a packed tensor (exact)."""
    layout = _detected_layout()
    if layout is not None:
        return _LAYOUTS[layout](packed, rows, cols)
    # Unknown layout: let the kernel decode it, x = identity, scale 1, zero 8 -> W^T holding the codes exactly.
    ones = torch.ones(cols // 32, rows, 1, dtype=torch.bfloat16)
    scale_zeros = torch.cat([ones, 8 * ones], dim=-1)
    eye = torch.eye(cols, dtype=torch.bfloat16)
    return int4_mm(eye, packed, scale_zeros).t().to(torch.uint8)


def unpack_rows(packed: torch.Tensor, rows: int, cols: int, ids: torch.Tensor) -> torch.Tensor:
    """The codes of rows `ids` only, (len(ids), cols) uint8, read straight from their bytes."""
    layout = _detected_layout()
    if layout is None:
        return unpack_codes(packed, rows, cols)[ids]
    block = _BLOCK_ROWS[layout]
    within = ids % block
    if layout.startswith("lanes"):  # row r of a block: byte r % (block / 2), high nibble from block / 2 on
        byte, shift = within % (block // 2), 4 * torch.div(within, block // 2, rounding_mode="floor")
    else:  # pairs: byte r // 2, high nibble for odd rows
        byte, shift = torch.div(within, 2, rounding_mode="floor"), 4 * (within % 2)
    data = packed.view(rows // block, cols, block // 2)[torch.div(ids, block, rounding_mode="floor"), :, byte]
    return (data >> shift.to(torch.uint8).unsqueeze(-1)) & 0x0F
