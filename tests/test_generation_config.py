"""Sampling defaults from generation_config.json, and `generation_config` (serve's --generation-config) choosing
them: the folder's, none ("vllm"), or a file given by path; a request's own fields win over them."""

from __future__ import annotations

import json

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.server.protocol import CompletionRequest


def test_override_by_path_and_none(tiny_llama, tmp_path):
    _, folder, gguf_path = tiny_llama
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "top_k": 7, "eos_token_id": 2}))
    llm = LLM(str(gguf_path), dtype="float32", generation_config=str(tmp_path))  # a GGUF file has no defaults
    assert llm.engine.generation_defaults == {"temperature": 0.3, "top_k": 7}
    params = llm.get_default_sampling_params()
    assert (params.temperature, params.top_k) == (0.3, 7)
    unset = CompletionRequest(prompt="hi").to_sampling_params(llm.engine.generation_defaults)
    given = CompletionRequest(prompt="hi", temperature=1.0, top_k=None).to_sampling_params(
        llm.engine.generation_defaults
    )
    assert (unset.temperature, unset.top_k) == (0.3, 7)
    assert (given.temperature, given.top_k) == (1.0, 7)  # an explicit null is "not set" too
    none = LLM(str(gguf_path), dtype="float32", generation_config="vllm")
    assert none.engine.generation_defaults == {} and none.get_default_sampling_params() == SamplingParams()
    with pytest.raises(InvalidRequestError, match="generation_config"):
        LLM(str(gguf_path), dtype="float32", generation_config=str(tmp_path / "missing.json"))


def test_auto_reads_the_model_folder(tiny_llama, tmp_path):
    _, folder, _ = tiny_llama
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "top_p": 0.9, "bos_token_id": 1}))
    llm = LLM(str(tmp_path), dtype="float32")
    assert llm.engine.generation_defaults == {"temperature": 0.6, "top_p": 0.9}
    assert llm.get_default_sampling_params().top_p == 0.9
