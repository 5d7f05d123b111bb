"""`mistralpy serve --task embed` (the embedded all-MiniLM-L6-v2) with the openai client's embeddings.create, against
sentence-transformers on the same folder; concurrent clients; bad inputs answered 400 while the server keeps serving."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch
import torch.nn.functional as F

from mistralpy.embed.default_model import default_embedding_model_path

from .embed_texts import TEXTS
from .server_process import KEY, ServerProcess, http


@pytest.fixture(scope="module")
def embed_server():
    proc = ServerProcess("--task", "embed", "--dtype", "float32", "--served-model-name", "minilm", "--api-key", KEY)
    try:
        yield proc.wait_ready(timeout=120)
    finally:
        proc.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def client(embed_server):
    return openai.OpenAI(base_url=f"{embed_server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def oracle():
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(default_embedding_model_path(), device="cpu")
    return st, st.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS)).float()


def _vectors(response) -> torch.Tensor:
    return torch.tensor([d.embedding for d in sorted(response.data, key=lambda d: d.index)])


def test_embeddings_create_matches_sentence_transformers(client, oracle):
    st, reference = oracle
    response = client.embeddings.create(model="minilm", input=TEXTS)  # the client asks for base64 and decodes it
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    assert F.cosine_similarity(_vectors(response), reference).min().item() >= 0.9999
    tokens = sum(len(ids) for ids in st.tokenizer(TEXTS)["input_ids"])
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    assert response.model == "minilm"


def test_float_format_token_ids_and_user(client, oracle):
    st, reference = oracle
    ids = st.tokenizer(TEXTS[3])["input_ids"]
    by_text = client.embeddings.create(model="minilm", input=TEXTS[3], encoding_format="float", user="u-1")
    by_ids = client.embeddings.create(model="minilm", input=ids, encoding_format="float")
    both = client.embeddings.create(model="minilm", input=[ids, ids[:4]], encoding_format="float")
    assert by_text.data[0].embedding == by_ids.data[0].embedding == both.data[0].embedding
    assert F.cosine_similarity(_vectors(by_text), reference[3:4]).item() >= 0.9999
    assert len(both.data) == 2 and both.usage.prompt_tokens == len(ids) + 4


def test_concurrent_clients_share_batches(client, embed_server, oracle):
    _, reference = oracle
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda text: client.embeddings.create(model="minilm", input=text), TEXTS))
    ours = torch.cat([_vectors(r) for r in results])
    assert F.cosine_similarity(ours, reference).min().item() >= 0.9999
    metrics = http(embed_server, "GET", "/metrics").text
    batch = next(line for line in metrics.splitlines() if line.startswith("mistralpy:max_batch_size "))
    assert float(batch.split()[1]) > 1


@pytest.mark.parametrize(
    "body, message",
    [
        ({"input": ""}, "non-empty"),
        ({"input": []}, "non-empty"),
        ({"input": ["ok", ""]}, "non-empty"),
        ({"input": "word " * 300}, "at most 256"),
        ({"input": "hi", "dimensions": 8}, "Matryoshka"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"input": [[1, 2], [99999999]]}, "outside the vocabulary"),
    ],
)
def test_bad_inputs_are_400(embed_server, body, message):
    response = http(embed_server, "POST", "/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert http(embed_server, "POST", "/v1/embeddings", json={"input": "still serving"}).status_code == 200


def test_client_errors_and_generation_refused(client):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm", input="hi", dimensions=8)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="other", input="hi")
    with pytest.raises(openai.BadRequestError, match="does not generate"):
        client.completions.create(model="minilm", prompt="hello", max_tokens=2)
    assert len(client.embeddings.create(model="minilm", input=["a", "b"]).data) == 2
