"""Mistral: Llama with sliding-window attention (config `sliding_window`), which every layer's `Attention` applies."""

from __future__ import annotations

from .llama import LlamaForCausalLM


class MistralForCausalLM(LlamaForCausalLM):
    pass
