"""The embedded model's GGUF file as the loader reads it, against gguf's own reader."""

from __future__ import annotations

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants

from mistralpy.loader import GGUFFile
from mistralpy.loader.default_model import default_model_path


def test_embedded_model() -> None:
    path = default_model_path()  # the embedded model is a required install: a missing one fails here
    f = GGUFFile(path)
    cfg = f.model_config()
    assert cfg.architecture == "llama"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert cfg.vocab_size == 49152 and cfg.rope_theta == 100000.0 and cfg.tie_word_embeddings
    assert len(f.metadata["tokenizer.ggml.tokens"]) == 49152
    reader = gguf.GGUFReader(path)  # slow (~2 s) but the reference; read only the tensor we compare
    tensor = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    expected = quants.dequantize(tensor.data, tensor.tensor_type)
    assert f.tensor_info("blk.0.attn_q.weight") == (Q.Q4_1, (576, 576))
    assert torch.equal(f.load_tensor("blk.0.attn_q.weight"), torch.from_numpy(np.ascontiguousarray(expected)))
