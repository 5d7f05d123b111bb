"""Decoder models embedding as llama.cpp does (last-token or mean pooling of the final-norm hidden states, unit
length), against transformers' hidden states of the same tiny Llama pooled in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mistralpy import LLM
from mistralpy.errors import InvalidRequestError

PROMPTS = ["Hello there, how are you today?", "a", "The quick brown fox jumps over the lazy dog " * 4]


def _oracle(hf_model, ids: list[int], mode: str) -> torch.Tensor:
    with torch.no_grad():
        hidden = hf_model.model(torch.tensor([ids])).last_hidden_state[0].double()
    vector = hidden[-1] if mode == "last" else hidden.mean(0)
    return vector / vector.norm()


@pytest.mark.parametrize("mode", ["last", "mean"])
def test_hf_folder_pooling(tiny_llama, mode):
    hf_model, folder, _ = tiny_llama
    # a budget below the longest prompt: an embedding is still computed whole, in one step
    llm = LLM(str(folder), dtype="float32", task="embed", pooling=mode, max_num_batched_tokens=16)
    outputs = llm.embed(PROMPTS)
    assert max(len(out.prompt_token_ids) for out in outputs) > 16
    for out in outputs:
        ours = torch.tensor(out.outputs.embedding, dtype=torch.float64)
        expected = _oracle(hf_model, out.prompt_token_ids, mode)
        assert torch.allclose(ours, expected, atol=1e-4), (mode, (ours - expected).abs().max())
    assert llm.engine.block_manager.num_free_blocks == llm.engine.block_manager.num_blocks


def test_gguf_last_token_by_default(tiny_llama):
    hf_model, _, gguf_path = tiny_llama
    llm = LLM(str(gguf_path), dtype="float32", task="embed")
    out = llm.embed(PROMPTS[0])[0]
    expected = _oracle(hf_model, out.prompt_token_ids, "last")
    assert F.cosine_similarity(torch.tensor(out.outputs.embedding).double(), expected, dim=0).item() >= 0.9999


def test_tasks_are_kept_apart(tiny_llama):
    _, folder, _ = tiny_llama
    with pytest.raises(InvalidRequestError, match="task 'embed'"):
        LLM(str(folder), dtype="float32").embed("hi")
    with pytest.raises(InvalidRequestError, match="embeddings only"):
        LLM(str(folder), dtype="float32", pooling="mean")
    with pytest.raises(InvalidRequestError, match="unknown pooling"):
        LLM(str(folder), dtype="float32", task="embed", pooling="max")
