"""Reasoning models: the `<think>...</think>` block of templates that have one (Qwen3, QwQ, DeepSeek-R1 distills),
split from the answer into `reasoning_content`, and allowed before grammar-constrained output."""

from .think import Thinking, ThinkStream, thinking_of

__all__ = ["ThinkStream", "Thinking", "thinking_of"]
