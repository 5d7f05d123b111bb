"""NativeQuantLinear: GGUF types with groups of 32 or 16 on the native kernel (kernels/quant_matmul.cpp), on every ISA
level (AVX-512 VNNI, AVX2, portable C++: kernels/isa_level.py).

The weight stays as its GGUF codes and per-group parameters, w = a * (q + c) + b, exactly (no requantization):
codes of up to 4 bits are packed two to a byte, wider ones (Q5_*, Q6_K, Q8_0) take a byte each, in panels of 16
rows, the u8 operands of the kernel's dot products. The kernel quantizes x per weight group (32; 16 for Q2_K, Q3_K
and Q6_K, whose scales are per 16 weights) to int8 (as llama.cpp does for its quantized dot products): integer sums,
exact, scaled per group in float32. It serves decode steps and prefill alike, x in bf16 or float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import kernels
from .affine import GroupAffine, exact_half, gguf_to_affine
from .ggml_types import GGMLQuantizationType
from .qmatmul_reference import qmatmul_reference
from .quantized_linear import QuantizedLinear

NATIVE_TYPES: frozenset[GGMLQuantizationType] = frozenset(
    GGMLQuantizationType[t] for t in ("Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q8_0", "Q2_K", "Q3_K", "Q6_K")
)


def native_qmatmul():
    """The native kernels if they are built (every level has qmatmul), else None."""
    native = kernels.native_module()
    return native if native is not None and native.has_qmatmul() else None


_KERNEL_DTYPES = (torch.bfloat16, torch.float32)  # x's dtypes the kernel takes (float16 dequantizes per call)
PANEL = 16  # weight rows per panel: the kernel's 16 output lanes
_PACK_PANELS = 256
# A panel's 64-byte block holds 32 // width codes of each of its 16 rows in one u32 lane, in this order along k:
# 4 bits: k0 k2 k4 k6 in the low u16, k1 k3 k5 k7 in the high one; 8 bits: bytes k0 k2 k1 k3.
_LANE_ORDER = {4: [0, 2, 4, 6, 1, 3, 5, 7], 8: [0, 2, 1, 3]}  # pack_panels spells it out
_FROM_LANE = {width: torch.tensor(order).argsort() for width, order in _LANE_ORDER.items()}  # lane order -> k order


def pack_panels(q: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, cols) codes below 2**width -> (ceil(rows / 16), 16 * cols * width / 8) bytes in the kernel's layout
    (kernels/quant_common.h): panels of 16 rows (zero rows pad the last), 64-byte blocks along k, a u32 lane a row.
    Packed 256 panels at a time, so that its temporaries stay small next to a large embedding table."""
    rows, cols = q.shape
    panels = -(-rows // PANEL)
    out = torch.empty(panels, PANEL * cols * width // 8, dtype=torch.uint8)
    for start in range(0, panels, _PACK_PANELS):
        part = q[start * PANEL : (start + _PACK_PANELS) * PANEL]
        if part.shape[0] % PANEL:
            part = F.pad(part, (0, 0, 0, PANEL - part.shape[0] % PANEL))
        k = part.reshape(-1, PANEL, cols * width // 32, 32 // width).unbind(-1)  # k[e]: code e of each lane
        if width == 4:
            lanes = torch.stack([k[0] | k[2] << 4, k[4] | k[6] << 4, k[1] | k[3] << 4, k[5] | k[7] << 4], dim=-1)
        else:
            lanes = torch.stack([k[0], k[2], k[1], k[3]], dim=-1)
        out[start : start + lanes.shape[0]] = lanes.transpose(1, 2).reshape(lanes.shape[0], -1)
    return out


def unpack_panels(packed: torch.Tensor, width: int, cols: int, ids: torch.Tensor | slice) -> torch.Tensor:
    """Rows `ids` of the codes `pack_panels` packed (padding rows included in a slice)."""
    panel, lane = _panel_and_lane(ids, packed.shape[0])
    lanes = packed.view(packed.shape[0], -1, PANEL, 4)[panel, :, lane]  # (len(ids), blocks, 4)
    if width == 4:
        lanes = torch.stack([lanes & 0x0F, lanes >> 4], dim=-1).flatten(-2)
    return lanes[..., _FROM_LANE[width]].reshape(lanes.shape[0], cols)


def panel_params(t: torch.Tensor) -> torch.Tensor:
    """Per-group parameters (rows, groups) -> (panels, groups, 16): the 16 rows of a panel side by side."""
    rows, groups = t.shape
    panels = -(-rows // PANEL)
    return F.pad(t, (0, 0, 0, panels * PANEL - rows)).view(panels, PANEL, groups).transpose(1, 2).contiguous()


def row_params(t: torch.Tensor, ids: torch.Tensor | slice) -> torch.Tensor:
    """The inverse of `panel_params` for rows `ids`."""
    panel, lane = _panel_and_lane(ids, t.shape[0])
    return t[panel, :, lane]


def _panel_and_lane(ids: torch.Tensor | slice, panels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `ids` (a slice of the padded rows, or indices) as their panels and lanes."""
    if isinstance(ids, slice):
        ids = torch.arange(panels * PANEL)[ids]
    return ids // PANEL, ids % PANEL


def use_kernel_reference(model: torch.nn.Module) -> int:
    """Switch every NativeQuantLinear in `model` to the kernel's arithmetic spelled in torch: the parity reference of
    the fast path (its outputs equal the kernel's). Decode steps then take the per-layer path. Returns how many."""
    layers = [m for m in model.modules() if isinstance(m, NativeQuantLinear)]
    for m in layers:
        m.use_kernel_reference()
    for m in model.modules():
        if hasattr(m, "forget_decode_stack"):
            m.forget_decode_stack()
    return len(layers)


class NativeQuantLinear(QuantizedLinear):
    def __init__(self, affine: GroupAffine, qtype: GGMLQuantizationType, bias: torch.Tensor | None, kernels) -> None:
        rows, cols = affine.q.shape
        super().__init__(cols, rows, bias)
        assert affine.group in (16, 32) and affine.bits <= 8, (affine.group, affine.bits)
        self.qtype = qtype
        self.group = affine.group
        self.offset, self.bits = affine.offset, affine.bits
        self.width = 4 if affine.bits <= 4 else 8  # bits per stored code
        self._kernels = kernels
        self.register_buffer("codes", pack_panels(affine.q, self.width))
        scale = exact_half(affine.scale)
        zero = None if affine.bias is None else affine.bias.to(scale.dtype)
        if zero is not None and not torch.equal(zero.float(), affine.bias):
            scale, zero = affine.scale.float(), affine.bias.float()  # the kernel takes one dtype for both
        self.register_buffer("scale", panel_params(scale))
        self.register_buffer("zero", None if zero is None else panel_params(zero))
        self._kernel_reference: GroupAffine | None = None  # set by use_kernel_reference
        self._bind()

    @classmethod
    def from_gguf_blocks(
        cls, raw: torch.Tensor, qtype: GGMLQuantizationType, shape: tuple[int, ...], bias: torch.Tensor | None, kernels
    ) -> NativeQuantLinear:
        return cls(gguf_to_affine(raw, qtype, shape), GGMLQuantizationType(qtype), bias, kernels)

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self._bind()
        return module

    def _bind(self) -> None:
        # The kernel's arguments as plain attributes: a decode step calls this layer ~120 times, and each buffer
        # read through nn.Module.__getattr__ costs about as much as the kernel call itself on small matrices.
        self._args = (self.codes, self.scale, self.zero, self.width, float(self.offset), self.out_features)
        self._bias = self.bias

    @property
    def runs_kernel(self) -> bool:
        return self._kernel_reference is None

    def use_kernel_reference(self) -> None:
        """From now on compute with the kernel's arithmetic spelled in torch (qmatmul_reference): equal, and slow."""
        self._kernel_reference = self._affine(slice(0, self.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._matmul(x, False)

    def forward_float32(self, x: torch.Tensor) -> torch.Tensor:
        return self._matmul(x, True)

    def _matmul(self, x: torch.Tensor, float_out: bool) -> torch.Tensor:
        if x.dtype not in _KERNEL_DTYPES:
            y = self._reference(x)
            return y.float() if float_out else y
        if x.dim() != 2:
            y = self._matmul(x.reshape(-1, self.in_features), float_out)
            return y.view(*x.shape[:-1], self.out_features)
        if self._kernel_reference is not None:
            y = qmatmul_reference(x, self._kernel_reference, float_out)
        else:
            y = self._kernels.qmatmul(x, *self._args, float_out)
        return y if self._bias is None else y + self._bias

    def _affine(self, ids: torch.Tensor | slice) -> GroupAffine:
        q = unpack_panels(self.codes, self.width, self.in_features, ids)
        zero = None if self.zero is None else row_params(self.zero, ids).float()
        return GroupAffine(q, row_params(self.scale, ids).float(), zero, self.offset, self.group, self.bits)

    def dequantize(self) -> torch.Tensor:
        return self._affine(slice(0, self.out_features)).dequantize()

    def dequantize_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self._affine(ids).dequantize()
