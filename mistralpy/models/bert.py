"""BERT-family sentence encoders (all-MiniLM, BGE, E5...): word + token-type + absolute position embeddings, post-LN
layers (attention, then a GELU MLP, each added to its input before a LayerNorm), bidirectional attention.

The engine schedules an encoder's prompt whole (an embedding request is one prefill): each sequence of the step
attends to all of its own tokens and to nothing else. No KV cache is read or written.

The residual stream, LayerNorms, attention and pooling stay in float32 whatever the weights' dtype: only the
projections run in it (bfloat16 halves their time where the CPU has bf16 dot products), so an embedding keeps a
cosine of ~1 - 1e-6 to the float32 one."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

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
    """The whole prompts of a step, packed one after another (T tokens), and the projections' dtype. Attention runs
    on groups of prompts of similar length, each padded to its longest (`groups`, built once a step)."""

    lengths: list[int]
    weight_dtype: torch.dtype  # the projections' inputs are cast to it; their outputs back to float32
    groups: list[AttentionGroup] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.groups = attention_groups(self.lengths)

    def project(self, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return linear(x.to(self.weight_dtype)).float()

    @classmethod
    def of(cls, meta: AttentionMetadata, positions: torch.Tensor, weight_dtype: torch.dtype) -> EncoderBatch:
        """Each sequence is one whole prompt: its tokens start at position 0 (a decode-shaped entry is a prompt of
        one token); the scheduler never chunks an encoder's prompt."""
        lengths = [1] * meta.num_decode_tokens + [span.num_tokens for span in meta.prefills]
        if any(span.context_len != span.num_tokens for span in meta.prefills) or (
            meta.num_decode_tokens and bool((positions[: meta.num_decode_tokens] != 0).any())
        ):
            raise InvalidRequestError("an encoder model needs each prompt whole in one step")
        return cls(lengths, weight_dtype)

    def attend(self, qkv: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
        """(T, 3 * H * D) packed q, k, v -> (T, H * D): each prompt's tokens attend to all of its tokens (and no
        padding). One attention call a group of prompts rather than one a prompt: each call has a fixed cost."""
        out = qkv.new_empty(qkv.shape[0], num_heads * head_dim)
        padded_qkv = torch.cat([qkv, qkv.new_zeros(1, qkv.shape[1])])  # row T: the padding's source
        for group in self.groups:
            part = padded_qkv[group.gather].view(group.size, group.width, 3, num_heads, head_dim)
            q, k, v = part.permute(2, 0, 3, 1, 4)  # each (G, H, L, D)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=group.mask)
            out[group.rows] = o.transpose(1, 2).reshape(-1, num_heads * head_dim)[group.real]
        return out


@dataclass
class AttentionGroup:
    size: int  # prompts
    width: int  # the longest one's tokens
    gather: torch.Tensor  # (size * width,) packed rows, the padding pointing at row T
    mask: torch.Tensor | None  # (size, 1, 1, width) keys that are real, or None without padding
    real: torch.Tensor  # which of the size * width padded rows are real
    rows: torch.Tensor  # their packed rows, in the same order


def attention_groups(lengths: list[int], waste: float = 0.25, most: int = 32) -> list[AttentionGroup]:
    """Prompts sorted by length and cut into groups whose padding stays under `waste` of their tokens."""
    starts = [0, *itertools.accumulate(lengths)][:-1]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups, current = [], []
    for i in order:  # ascending: a prompt added is the group's longest
        candidate = [*current, i]
        padded = lengths[i] * len(candidate)
        if current and (len(candidate) > most or padded > (1 + waste) * sum(lengths[j] for j in candidate)):
            groups.append(_group(current, lengths, starts))
            candidate = [i]
        current = candidate
    if current:
        groups.append(_group(current, lengths, starts))
    return groups


def _group(members: list[int], lengths: list[int], starts: list[int]) -> AttentionGroup:
    width, total = max(lengths[i] for i in members), sum(lengths)
    offsets = torch.arange(width)
    lens = torch.tensor([lengths[i] for i in members])
    valid = offsets[None, :] < lens[:, None]  # (G, width)
    gather = torch.where(valid, torch.tensor([starts[i] for i in members])[:, None] + offsets[None, :], total)
    real = valid.flatten().nonzero().squeeze(1)
    mask = None if bool(valid.all()) else valid[:, None, None, :]
    return AttentionGroup(len(members), width, gather.flatten(), mask, real, gather.flatten()[real])


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
        return self.LayerNorm(x.float())


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.num_attention_heads * cfg.head_dim, bias=True)

    def forward(self, x: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        return batch.attend(batch.project(self.qkv, x), self.num_heads, self.head_dim)


class BertOutput(nn.Module):
    """dense -> residual add -> LayerNorm: the post-LN step after attention and after the MLP."""

    def __init__(self, in_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = Linear(in_features, cfg.hidden_size, bias=True)
        self.LayerNorm = LayerNorm(cfg.hidden_size, float(cfg.extra.get("layer_norm_eps", 1e-12)))

    def forward(self, x: torch.Tensor, residual: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        return self.LayerNorm(batch.project(self.dense, x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertOutput(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        return self.output(self.self(x, batch), x, batch)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        act = cfg.extra.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise InvalidRequestError(f"unsupported BERT hidden_act {act!r}; supported: gelu, gelu_new")
        self.approximate = "none" if act == "gelu" else "tanh"
        self.dense = Linear(cfg.hidden_size, cfg.intermediate_size, bias=True)

    def forward(self, x: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        # left in the projections' dtype: the next projection takes it so (the widest tensor is never converted)
        return F.gelu(self.dense(x.to(batch.weight_dtype)), approximate=self.approximate)


class BertLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, batch: EncoderBatch) -> torch.Tensor:
        x = self.attention(x, batch)
        return self.output(self.intermediate(x, batch), x, batch)


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
        batch = EncoderBatch.of(meta, positions, self.embeddings.word_embeddings.weight.dtype)
        x = self.embeddings(input_ids, positions)
        for layer in self.encoder.layer:
            x = layer(x, batch)
        return x
