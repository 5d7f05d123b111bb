"""Tensor parallelism's sharded layers: every family's logits from 2 gloo ranks (fp32) against one process's, from
HF folders (safetensors), Q8_0 GGUF files, a model with fewer KV heads than ranks (replicated KV heads) and one
whose KV groups split unevenly."""

from __future__ import annotations

import pytest
import torch

from mistralpy.config import ModelConfig
from mistralpy.distributed.tensor_parallel.shard import TensorShard
from mistralpy.errors import InvalidRequestError, UnsupportedArchitectureError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.models.llama import LlamaForCausalLM

from .families import FAMILIES, build
from .tp_ranks import parallel_logits, single_logits

PROMPT = torch.randint(3, 49152, (21,), generator=torch.Generator().manual_seed(3)).tolist()
STEPS = [11, 12, 13]


def test_every_family_two_ranks_match_one(family_files, tiny_llama, tmp_path, tokenizer_dir):
    jobs = {name: family_files(name).folder for name in FAMILIES}
    jobs["llama_q8_0"] = family_files("llama").gguf_q8
    jobs["mixtral_q8_0"] = family_files("mixtral").gguf_q8
    jobs["llama_one_kv_head"] = build("llama", tmp_path / "one_kv", tokenizer_dir, num_key_value_heads=1).folder
    uneven = build(
        "llama", tmp_path / "uneven", tokenizer_dir, hidden_size=96, num_attention_heads=6, num_key_value_heads=3
    )
    jobs["llama_6_heads_3_kv_heads"] = uneven.folder  # 3 KV groups over 2 ranks: 2 and 4 heads
    jobs["tied_gguf"] = tiny_llama[2]
    ours = parallel_logits(jobs, PROMPT, STEPS, tmp_path)
    for key, path in jobs.items():
        ref = single_logits(path, PROMPT, STEPS)
        assert ours[key].shape == ref.shape, key
        torch.testing.assert_close(ours[key], ref, atol=1e-4, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


def test_shard_refuses_what_it_cannot_split(family_files):
    source = open_model_source(family_files("llama").folder)  # 4 heads, 2 KV heads, vocab 49152
    with pytest.raises(InvalidRequestError, match="does not divide intermediate_size"):
        load_model(source, torch.float32, tensor_shard=TensorShard(0, 3))
    cfg = ModelConfig("llama", 64, 48, 64, 1, num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=8)
    with pytest.raises(InvalidRequestError, match="exceeds num_key_value_heads"):
        TensorShard(0, 4).check(LlamaForCausalLM, cfg)


def test_heads_go_to_ranks_in_whole_kv_groups():
    cfg = ModelConfig("llama", 64, 576, 64, 1, num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8)
    assert [TensorShard(r, 2).heads(cfg) for r in range(2)] == [(0, 3, 0, 1), (3, 6, 1, 2)]
    cfg = ModelConfig("llama", 64, 64, 64, 1, num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=8)
    assert [TensorShard(r, 2).heads(cfg) for r in range(2)] == [(0, 2, 0, 1), (2, 2, 0, 1)]


def test_shard_refuses_encoders(tmp_path):
    from mistralpy.models.bert import BertModel

    cfg = type("Cfg", (), {"architecture": "bert"})()
    with pytest.raises(UnsupportedArchitectureError, match="tensor parallelism supports"):
        TensorShard(0, 2).check(BertModel, cfg)
