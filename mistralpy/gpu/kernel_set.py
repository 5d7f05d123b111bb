"""TritonKernels: the Triton kernels behind the same calls the layers make to the C++ CPU kernels (layers/native.py's
binding, AttentionMetadata's decode / prefill kernels), so that a CUDA engine's norms, rotary, SiLU-and-mul (and
Gemma's GeGLU) and paged attention go through mistralpy.gpu with no change to the models. K/V writes stay torch's
index_copy (one device-agnostic scatter); structured-output masks are applied by torch on the logits' device."""

from __future__ import annotations

import torch

from . import elementwise, paged_attention


class TritonKernels:
    """Duck-types the parts of mistralpy.kernels' native module that the layers and attention call."""

    write_kv = None  # layers/kv_cache.write_kv's torch path
    apply_token_bitmask = None  # structured/token_mask.apply_bitmask's torch path
    argmax_rows = None  # the sampler's torch argmax

    @staticmethod
    def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gemma: bool) -> torch.Tensor:
        return elementwise.rms_norm(x, weight, eps, 1.0 if gemma else 0.0)

    @staticmethod
    def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple:
        """Rotated copies, as the native call returns (q and k may be views of the fused qkv output)."""
        return elementwise.rotary_(q.clone(), cos, sin), elementwise.rotary_(k.clone(), cos, sin)

    @staticmethod
    def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
        return elementwise.gated_activation(x, "silu")

    @staticmethod
    def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
        return elementwise.gated_activation(x, "gelu_tanh")

    @staticmethod
    def decode_attention(q, kv_cache, block_tables, lens, scale: float, window: int, softcap: float) -> torch.Tensor:
        """One query per sequence over a layer's (2, blocks, block_size, Hkv, D) cache."""
        return paged_attention.paged_decode(
            q, kv_cache[0], kv_cache[1], block_tables, lens, scale, window=window, softcap=softcap
        )

    @staticmethod
    def prefill_attention(
        q, kv_cache, block_table, context_len: int, scale: float, window: int, softcap: float
    ) -> torch.Tensor:
        """One sequence's chunk of queries, its last tokens of `context_len`."""
        n, device = q.shape[0], q.device
        lens = torch.tensor([context_len], dtype=torch.int32, device=device)
        starts = torch.tensor([0, n], dtype=torch.int32, device=device)
        return paged_attention.paged_prefill(
            q, kv_cache[0], kv_cache[1], block_table.unsqueeze(0), lens, starts, scale, window=window,
            softcap=softcap, max_query_len=n,
        )  # fmt: skip
