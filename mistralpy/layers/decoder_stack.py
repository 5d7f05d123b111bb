"""DecoderStack: a decode-only step's Llama decoder layers in one native call (kernels/decoder_stack.cpp).

At a batch of a few decode tokens the kernels of a layer take ~100 us; the ~25 Python-level calls around them took
~70 us more. The native stack runs the same kernels in the same order (results equal the per-layer path bit for
bit), for models whose layers compute exactly Llama's decoder layer over native quantized weights
(`LlamaModel.decode_stack` decides which do). Steps with prefill tokens run the per-layer path. LoRA layers
(lora/layer.py) run in the stack too: each projection adds its tokens' adapter deltas (the native lora_add, over the
layer's own slot buffers) right after its base matmul.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import GenerationError
from ..quant.native_linear import NativeQuantLinear
from ..quant.quantized_linear import FusedQuantizedLinear
from .attention import AttentionMetadata
from .rotary import RotaryEmbedding


@dataclass
class StackLayer:
    """One decoder layer's tensors, in the order the stack applies them."""

    input_norm: torch.Tensor
    qkv: nn.Module
    o: nn.Module
    post_norm: torch.Tensor
    gate_up: nn.Module
    down: nn.Module
    window: int | None
    eps: float | None  # the norms' epsilon (None: the two differ)


LINEARS = ("qkv", "o", "gate_up", "down")


def _without_adapters(layer: StackLayer) -> StackLayer:
    """A LoRA layer's base (its `stack_base`), for the checks of what the stack runs."""
    return replace(layer, **{k: getattr(getattr(layer, k), "stack_base", getattr(layer, k)) for k in LINEARS})


def _lora_state(layers: list[StackLayer]):
    """The LoRA layers' shared state (the step's token slots), or None where no projection is a LoRA layer; False
    where some LoRA layer's slots are not bf16 (the stack's lora_add takes bf16 only)."""
    loras = [m for layer in layers for m in (getattr(layer, k) for k in LINEARS) if hasattr(m, "stack_base")]
    if any(m.lora_a.dtype != torch.bfloat16 for m in loras):
        return False
    return loras[0].state if loras else None


class DecoderStack:
    def __init__(self, stack, rotary: RotaryEmbedding, lora=None) -> None:
        self.stack, self.rotary, self.lora = stack, rotary, lora  # lora: the LoRA layers' LoRAState, or None

    @classmethod
    def build(cls, layers: list[StackLayer], rotary, num_heads, num_kv_heads, head_dim) -> DecoderStack | None:
        """The stack over `layers`, or None where a weight is not a native quantized one on its kernel (or parts of
        different types fused, each one), a norm is not bf16, the norms' epsilons differ (the stack takes one), or
        LoRA slots are not bf16."""
        lora = _lora_state(layers)
        bases = [_without_adapters(layer) for layer in layers]
        linears = [m for layer in bases for m in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        norms = [t for layer in bases for t in (layer.input_norm, layer.post_norm)]
        parts = [p for m in linears for p in (m.parts if type(m) is FusedQuantizedLinear else [m])]
        native = all(type(p) is NativeQuantLinear and p.runs_kernel for p in parts)
        if any(m._forward_hooks for m in linears):  # a hook (tensor parallelism's all-reduce) the stack would skip
            return None
        if not native or lora is False or any(t.dtype != torch.bfloat16 for t in norms):
            return None
        eps = layers[0].eps
        if eps is None or any(layer.eps != eps for layer in layers):
            return None
        native = parts[0]._kernels
        stack = native.DecoderStack(num_heads, num_kv_heads, head_dim, eps, head_dim**-0.5)

        def linear(m: nn.Module):
            if hasattr(m, "stack_base"):  # a LoRA layer: its base plus its slots
                return linear(m.stack_base).with_lora(m.lora_a, m.lora_b, m.slot_spans)
            if type(m) is FusedQuantizedLinear:
                return native.QuantLinear.concat([linear(p) for p in m.parts])
            return native.QuantLinear(*m._args, m._bias)

        for layer in layers:
            stack.add_layer(
                layer.input_norm,
                linear(layer.qkv),
                linear(layer.o),
                layer.post_norm,
                linear(layer.gate_up),
                linear(layer.down),
                layer.window or 0,
            )
        return cls(stack, rotary, lora)

    @staticmethod
    def runs(x: torch.Tensor, meta: AttentionMetadata) -> bool:
        """Whether a step is one the stack runs: decode tokens only, bf16, with the native decode attention, no token
        of an adapter the stack does not run (X-LoRA's: `adapters_active`; plain LoRA adapters run in the stack)."""
        native = meta.decode_kernel is not None and x.dtype == torch.bfloat16
        return native and not meta.prefills and not meta.adapters_active

    def __call__(
        self, x: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor], meta: AttentionMetadata
    ) -> torch.Tensor:
        cos, sin = self.rotary.cos_sin(positions, x.dtype)
        step = None if self.lora is None else self.lora.step
        slots = None if step is None else step.slots
        if step is not None and slots is None:
            raise GenerationError("a LoRA step without its token slots cannot run in the native DecoderStack")
        args = (meta.slot_mapping, meta.decode_block_tables, meta.decode_lens, slots)
        return self.stack.forward(x, cos, sin, kv_caches, *args)
