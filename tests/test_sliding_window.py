"""Sliding windows switched on where a family makes them optional (Qwen2: use_sliding_window, max_window_layers),
against transformers, for a prompt several windows long; the window really changes the result."""

from __future__ import annotations

import torch

from mistralpy.config import ModelConfig

from .families import build
from .test_families import engine_logits, reference_logits

PROMPT = torch.randint(3, 49152, (30,), generator=torch.Generator().manual_seed(7)).tolist()
STEPS = [7, 8, 9]


def test_qwen2_sliding_layers_match_transformers(tmp_path, tokenizer_dir, monkeypatch):
    files = build(
        "qwen2", tmp_path / "qwen2_swa", tokenizer_dir, use_sliding_window=True, sliding_window=8, max_window_layers=1
    )
    ref = reference_logits(files.reference, PROMPT + STEPS)
    pre, dec = engine_logits(files.folder, PROMPT, STEPS)
    torch.testing.assert_close(torch.cat([pre, dec]), ref, atol=1e-4, rtol=0)
    monkeypatch.setattr(ModelConfig, "sliding_window_of", lambda self, layer: None)
    pre, _ = engine_logits(files.folder, PROMPT, STEPS)
    assert (pre - ref[: len(PROMPT)]).abs().max() > 1e-2  # without the window the result differs
