"""BERT-family sentence encoders (all-MiniLM, BGE, E5...): word + token-type + absolute position embeddings, post-LN
layers (attention, then a GELU MLP, each added to its input before a LayerNorm), bidirectional attention.

The engine schedules an encoder's prompt whole (an embedding request is one prefill): each sequence of the step
attends to all of its own tokens and to nothing else. No KV cache is read or written."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import InvalidRequestError
from ..layers.attention import AttentionMetadata
from ..layers.embedding import VocabEmbedding
from ..layers.linear import Linear
from ..layers.norm import LayerNorm

# Tensors of a BERT checkpoint that are not weights of ours: the position-id buffer and the (unused) NSP pooler.
HF_IGNORED = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
FUSED = {"query": ("qkv", 0), "key": ("qkv", 1), "value": ("qkv", 2)}


@dataclass
class EncoderBatch:
    """The sequences of a step as a padded batch: (B, L) rows of the packed (T,) tokens, and which are real."""

    lengths: list[int]
    valid: torch.Tensor  # (B, L) bool

    @classmethod
    def of(cls, meta: AttentionMetadata, positions: torch.Tensor) -> EncoderBatch:
        """Each sequence is one whole prompt: its tokens start at position 0 (a decode-shaped entry is a prompt of
        one token); the scheduler never chunks an encoder's prompt."""
        lengths = [1] * meta.num_decode_tokens + [span.num_tokens for span in meta.prefills]
        if any(span.context_len != span.num_tokens for span in meta.prefills) or (
            meta.num_decode_tokens and bool((positions[: meta.num_decode_tokens] != 0).any())
        ):
            raise InvalidRequestError("an encoder model needs each prompt whole in one step")
        longest = max(lengths)
        valid = torch.arange(longest).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
        return cls(lengths, valid)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) packed -> (B, L, ...) padded with zeros."""
        return nn.utils.rnn.pad_sequence(list(x.split(self.lengths)), batch_first=True)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.valid]


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.word_embeddings = VocabEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = VocabEmbedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = VocabEmbedding(int(cfg.extra.get("type_vocab_size", 2)), cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, float(cfg.extra.get("layer_norm_eps", 1e-12)))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # one segment per prompt: token type 0 throughout, as sentence-transformers encodes single texts
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.num_attention_heads * cfg.head_dim, bias=True)

    def forward(self, x: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        q, k, v = batch.pad(self.qkv(x)).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        mask = batch.valid[:, None, None, :]  # a query attends to every real token of its own sequence
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return batch.unpad(out.transpose(1, 2).flatten(2))


class BertOutput(nn.Module):
    """dense -> residual add -> LayerNorm: the post-LN step after attention and after the MLP."""

    def __init__(self, in_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = Linear(in_features, cfg.hidden_size, bias=True)
        self.LayerNorm = LayerNorm(cfg.hidden_size, float(cfg.extra.get("layer_norm_eps", 1e-12)))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertOutput(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        return self.output(self.self(x, batch), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        act = cfg.extra.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise InvalidRequestError(f"unsupported BERT hidden_act {act!r}; supported: gelu, gelu_new")
        self.approximate = "none" if act == "gelu" else "tanh"
        self.dense = Linear(cfg.hidden_size, cfg.intermediate_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x), approximate=self.approximate)


class BertLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        x = self.attention(x, batch)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class BertModel(nn.Module):
    """The encoder's last hidden states; pooling into one vector a text is the engine's (embed/pooling.py)."""

    is_encoder = True
    hf_ignored = HF_IGNORED
    fused = FUSED

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(self, input_ids, positions, kv_caches, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: (T,) packed whole prompts -> (T, hidden). `kv_caches` is not used."""
        batch = EncoderBatch.of(meta, positions)
        x = self.embeddings(input_ids, positions)
        for layer in self.encoder.layer:
            x = layer(x, batch)
        return x
