"""Pooling against a float64 reference written here, and sentence-transformers folder layouts read into a spec."""

from __future__ import annotations

import json

import pytest
import torch

from mistralpy.embed.pooling import PoolingParams, pool
from mistralpy.embed.spec import embedding_spec
from mistralpy.errors import InvalidRequestError, ModelLoadError, PromptTooLongError


@pytest.mark.parametrize("mode", ["mean", "cls", "last"])
@pytest.mark.parametrize("dims", [None, 3])
def test_pool_matches_reference(mode, dims):
    hidden = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    rows = hidden.double().tolist()
    full = {"mean": [sum(col) / 5 for col in zip(*rows, strict=True)], "cls": rows[0], "last": rows[-1]}[mode]
    vector = full[:dims]
    norm = sum(v * v for v in vector) ** 0.5
    ours = pool(hidden, PoolingParams(mode, normalize=True, dimensions=dims))
    assert torch.allclose(ours.double(), torch.tensor([v / norm for v in vector], dtype=torch.float64), atol=1e-6)
    raw = pool(hidden, PoolingParams(mode, normalize=False))
    assert torch.allclose(raw.double(), torch.tensor(full, dtype=torch.float64), atol=1e-6)


def _st_folder(tmp_path, pooling: dict, modules=("Transformer", "Pooling", "Normalize"), **files):
    tmp_path.mkdir(exist_ok=True)
    entries = [
        {"idx": i, "name": str(i), "path": {"Pooling": "1_Pooling"}.get(kind, ""),
         "type": f"sentence_transformers.models.{kind}"}
        for i, kind in enumerate(modules)
    ]  # fmt: skip
    (tmp_path / "modules.json").write_text(json.dumps(entries))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    for name, data in files.items():
        (tmp_path / name.replace("__", ".")).write_text(json.dumps(data))
    return tmp_path


def test_folder_layouts(tmp_path):
    pooling = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    config = {"max_seq_length": 128}
    folder = _st_folder(tmp_path, pooling, modules=("Transformer", "Pooling"), sentence_bert_config__json=config)
    spec = embedding_spec(folder, {}, 16, None, True)
    assert spec.pooling == PoolingParams("cls", normalize=False) and spec.max_seq_length == 128
    assert embedding_spec(folder, {}, 16, "last", True).pooling.mode == "last"  # --pooling overrides
    with pytest.raises(InvalidRequestError, match="not a Matryoshka"):
        spec.request_params(8)


def test_matryoshka_dimensions(tmp_path):
    folder = _st_folder(tmp_path, {"pooling_mode_mean_tokens": True})
    spec = embedding_spec(folder, {"matryoshka_dimensions": [8, 16]}, 16, None, True)
    assert spec.request_params(8) == PoolingParams("mean", True, 8)
    with pytest.raises(InvalidRequestError, match="use 8, 16"):
        spec.request_params(4)
    assert embedding_spec(folder, {"is_matryoshka": True}, 16, None, True).request_params(5).dimensions == 5


def test_unsupported_layouts(tmp_path):
    with pytest.raises(ModelLoadError, match="Dense"):
        embedding_spec(_st_folder(tmp_path / "a", {}, modules=("Transformer", "Pooling", "Dense")), {}, 8, None, True)
    with pytest.raises(ModelLoadError, match="unsupported pooling"):
        embedding_spec(_st_folder(tmp_path / "b", {"pooling_mode_max_tokens": True}), {}, 8, None, True)


def test_defaults_and_prompt_checks():
    assert embedding_spec(None, {}, 8, None, is_encoder=False).pooling == PoolingParams("last", True)
    spec = embedding_spec(None, {}, 8, None, is_encoder=True)
    assert spec.pooling.mode == "cls"
    spec.check_prompt([1, 2], vocab_size=10, max_len=2)
    with pytest.raises(PromptTooLongError):
        spec.check_prompt([1, 2, 3], vocab_size=10, max_len=2)
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        spec.check_prompt([10], vocab_size=10, max_len=2)
