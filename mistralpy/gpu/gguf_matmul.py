"""x @ W^T with W in its GGUF blocks, in Triton: each program dequantizes 32 columns of a tile of W's rows at a time
(one group-of-32 block, or one 32-element slice of a K-quant super-block) into float32 and accumulates with tl.dot;
the weights never exist in float. Types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K (ggml's block layouts)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# (elements a block, bytes a block) of the types done here, by their GGML type number
TYPES = {"Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34),
         "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210)}  # fmt: skip


@triton.jit
def _byte(ptr, offs):
    return tl.load(ptr + offs).to(tl.int32)


@triton.jit
def _f16(ptr, offs):
    """The little-endian float16 at byte `offs`, as float32."""
    bits = (_byte(ptr, offs) | (_byte(ptr, offs + 1) << 8)).to(tl.uint16)
    return bits.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _small_block(w, base, e, QTYPE: tl.constexpr):
    """(R, 32) values of one group-of-32 block: `base` (R, 1) its first byte, `e` (1, 32) the element."""
    j = e % 16
    high = e >= 16
    if QTYPE == 8:  # Q8_0: d, 32 int8
        return _f16(w, base) * _byte(w, base + 2 + e).to(tl.int8).to(tl.float32)
    if QTYPE == 2 or QTYPE == 3:  # Q4_0: d, 16 bytes; Q4_1: d, m, 16 bytes
        qs = _byte(w, base + (2 if QTYPE == 2 else 4) + j)
        q = tl.where(high, qs >> 4, qs & 15).to(tl.float32)
        if QTYPE == 2:
            return _f16(w, base) * (q - 8.0)
        return _f16(w, base) * q + _f16(w, base + 2)
    # Q5_0: d, qh (4 bytes), 16 bytes; Q5_1: d, m, qh, 16 bytes
    head = 2 if QTYPE == 6 else 4
    qh = _byte(w, base + head + e // 8)
    qs = _byte(w, base + head + 4 + j)
    q = (tl.where(high, qs >> 4, qs & 15) | (((qh >> (e % 8)) & 1) << 4)).to(tl.float32)
    if QTYPE == 6:
        return _f16(w, base) * (q - 16.0)
    return _f16(w, base) * q + _f16(w, base + 2)


@triton.jit
def _k_block(w, base, t, QTYPE: tl.constexpr):
    """(R, 32) values of a K-quant super-block: `base` (R, 1) its first byte, `t` (1, 32) elements in 0..255."""
    if QTYPE == 12:  # Q4_K: d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles
        sub = t // 32  # ggml's get_scale_min_k4(sub) over scales = bytes 4..15
        low = sub < 4
        s_j, s_j4, s_jm4 = _byte(w, base + 4 + sub), _byte(w, base + 8 + sub), _byte(w, base + sub)
        sc = tl.where(low, s_j & 63, (s_j4 & 15) | ((s_jm4 >> 6) << 4))
        mn = tl.where(low, s_j4 & 63, (s_j4 >> 4) | ((s_j >> 6) << 4))
        qs = _byte(w, base + 16 + 32 * (t // 64) + t % 32)
        q = tl.where((t % 64) < 32, qs & 15, qs >> 4).to(tl.float32)
        return _f16(w, base) * sc.to(tl.float32) * q - _f16(w, base + 2) * mn.to(tl.float32)
    # Q6_K: ql (128 bytes), qh (64), int8 scales (16), d
    half, r = t // 128, t % 128
    quarter, lane = r // 32, r % 32
    ql = _byte(w, base + 64 * half + lane + 32 * (quarter % 2))
    nibble = tl.where(quarter < 2, ql & 15, ql >> 4)
    qh = (_byte(w, base + 128 + 32 * half + lane) >> (2 * quarter)) & 3
    scale = _byte(w, base + 192 + 8 * half + lane // 16 + 2 * quarter).to(tl.int8).to(tl.float32)
    return _f16(w, base + 208) * scale * ((nibble | (qh << 4)) - 32).to(tl.float32)


@triton.jit
def _gguf_matmul_kernel(
    x_ptr, w_ptr, out_ptr, M, N, K, sx_m, so_m, row_bytes,
    QTYPE: tl.constexpr, BLOCK_ELEMS: tl.constexpr, BLOCK_BYTES: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rows_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    e = tl.arange(0, 32)
    mmask, nmask = rows_m < M, rows_n < N
    n_safe = tl.where(nmask, rows_n, 0)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    k0 = 0
    while k0 < K:  # (Triton's interpreter takes no runtime bound in range)
        x = tl.load(x_ptr + rows_m[:, None] * sx_m + (k0 + e)[None, :], mask=mmask[:, None], other=0.0)
        block = k0 // BLOCK_ELEMS
        base = n_safe[:, None] * row_bytes + block * BLOCK_BYTES
        if BLOCK_ELEMS == 32:
            wt = _small_block(w_ptr, base, e[None, :], QTYPE)
        else:
            wt = _k_block(w_ptr, base, (k0 % BLOCK_ELEMS + e)[None, :], QTYPE)
        acc += tl.dot(x.to(tl.float32), tl.trans(wt))
        k0 += 32
    tl.store(out_ptr + rows_m[:, None] * so_m + rows_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mmask[:, None] & nmask[None, :])  # fmt: skip


def gguf_matmul(
    x: torch.Tensor, blocks: torch.Tensor, qtype: str, out_features: int, block_m: int = 16, block_n: int = 32
) -> torch.Tensor:
    """x (..., K) @ W^T, W (out_features, K) given as its GGUF blocks: (out_features, K / elems * bytes) uint8."""
    if qtype not in TYPES:
        raise ValueError(f"no Triton matmul for GGUF type {qtype}; these have one: {', '.join(TYPES)}")
    code, elems, nbytes = TYPES[qtype]
    k = x.shape[-1]
    if k % elems or blocks.shape != (out_features, k // elems * nbytes) or blocks.dtype != torch.uint8:
        raise ValueError(f"{qtype} blocks for a ({out_features}, {k}) weight are ({out_features}, "
                         f"{k // elems * nbytes}) uint8, got {tuple(blocks.shape)} {blocks.dtype}")  # fmt: skip
    x2 = x.reshape(-1, k).contiguous()
    out = torch.empty(x2.shape[0], out_features, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(x2.shape[0], block_m), triton.cdiv(out_features, block_n))
    _gguf_matmul_kernel[grid](
        x2, blocks.contiguous(), out, x2.shape[0], out_features, k, x2.stride(0), out.stride(0), blocks.shape[1],
        code, elems, nbytes, block_m, block_n,
    )  # fmt: skip
    return out.view(*x.shape[:-1], out_features)
