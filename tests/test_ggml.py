"""Legacy GGML (ggjt v3) files: the same weights as GGUF give the same logits; user hyper-parameters; the tokenizer from
the file's vocabulary against sentencepiece; bad files; the CLI flags reaching the loader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from mistralpy import LLM, SamplingParams
from mistralpy.engine.engine import load_tokenizer
from mistralpy.engine.model_runner import ModelRunner
from mistralpy.errors import InvalidRequestError, ModelLoadError
from mistralpy.layers.linear import Linear
from mistralpy.loader import GGMLFile, GGMLParams, GGUFFile, open_model_source
from mistralpy.loader.model_loader import load_model

from .ggml_files import Tiny, ggml_file, gguf_file, make_tiny
from .ggml_writer import (
    CORPUS,
    llama_tensors,
    write_ggml,
)
from .helpers import make_tiny_llama
from .model_steps import BLOCK, prefill

TYPES = [Q.F32, Q.F16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]
PARAMS = GGMLParams(gqa=2, rms_norm_eps=1e-5)  # the tiny model: 4 heads, 2 KV heads; eps as its HF config
PROMPT = [1, 5, 100, 300, 42, 7, 260, 383, 9, 11, 12]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return make_tiny(tmp_path_factory)


def logits(source, dtype: torch.dtype = torch.float32, weights: str = "dequantized") -> torch.Tensor:
    runner = ModelRunner(load_model(source, dtype, weights=weights), num_blocks=8, block_size=BLOCK, dtype=dtype)
    with torch.inference_mode():
        return prefill(runner, PROMPT, 0).float()


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_same_logits_as_gguf(tiny: Tiny, qtype: Q) -> None:
    ggml = open_model_source(ggml_file(tiny, qtype), PARAMS)
    gguf = open_model_source(gguf_file(tiny, qtype))
    assert isinstance(ggml, GGMLFile)
    for name in gguf.tensor_names:
        assert ggml.tensor_info(name) == gguf.tensor_info(name), name
        assert torch.equal(ggml.raw_tensor(name)[0], gguf.raw_tensor(name)[0]), name
    assert sorted(ggml.tensor_names) == sorted(gguf.tensor_names)
    assert torch.equal(logits(ggml), logits(gguf))
    if qtype not in (Q.F32, Q.F16):  # the blocks kept quantized, through the quantized kernels
        assert torch.equal(logits(ggml, torch.bfloat16, "quantized"), logits(gguf, torch.bfloat16, "quantized"))


def test_f32_matches_transformers(tiny: Tiny) -> None:
    with torch.no_grad():
        ref = tiny.hf_model(torch.tensor([PROMPT])).logits[0]
    torch.testing.assert_close(logits(open_model_source(ggml_file(tiny), PARAMS)), ref, atol=1e-4, rtol=0)


def test_greedy_through_the_engine(tiny: Tiny) -> None:
    llm = LLM(str(ggml_file(tiny, Q.F32)), dtype="float32", gqa=2, rms_norm_eps=1e-5, block_size=BLOCK)
    out = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    ids = list(PROMPT)
    with torch.no_grad():
        for _ in range(12):
            ids.append(int(tiny.hf_model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert out.outputs[0].token_ids == ids[len(PROMPT) :]
    assert llm.engine.max_model_len == 2048  # the converter's default context length


def test_hyper_parameters(tiny: Tiny) -> None:
    path = ggml_file(tiny, Q.Q8_0)
    cfg = GGMLFile(path, GGMLParams(gqa=2)).model_config()
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size) == (4, 2, 128)
    assert (cfg.rms_norm_eps, cfg.rope_theta, cfg.max_position_embeddings) == (5e-6, 10000.0, 2048)  # llama.cpp's
    cfg = GGMLFile(path, GGMLParams(2, rope_theta=5e5, rms_norm_eps=1e-6, context_length=300)).model_config()
    assert (cfg.rms_norm_eps, cfg.rope_theta, cfg.max_position_embeddings) == (1e-6, 5e5, 300)
    # the file cannot tell its KV heads: without gqa, or with a wrong one, its key projection's shape says what to pass
    for params in (None, GGMLParams(gqa=4)):
        with pytest.raises(ModelLoadError, match=r"wk has 32 rows.*set gqa \(--gqa\) to 2"):
            GGMLFile(path, params)
    with pytest.raises(InvalidRequestError, match="gqa 3 does not divide the 4 attention heads"):
        GGMLFile(path, GGMLParams(gqa=3))


def test_isq_needs_full_precision(tiny: Tiny) -> None:
    source = open_model_source(ggml_file(tiny, Q.F16), PARAMS)
    model = load_model(source, torch.bfloat16, weights="quantized", quantization="q8_0")
    assert not isinstance(model.model.layers[0].self_attn.qkv_proj, Linear)  # swapped for the quantized module
    with pytest.raises(InvalidRequestError, match="already quantized \\(Q4_1\\)"):
        load_model(open_model_source(ggml_file(tiny, Q.Q4_1), PARAMS), torch.float32, quantization="q8_0")


def test_rope_theta_reaches_the_model(tiny: Tiny, tmp_path: Path) -> None:
    other = make_tiny_llama(tmp_path / "hf", vocab_size=len(tiny.vocab), rope_theta=5e5)  # same seed, same weights
    weights = zip(other.state_dict().values(), tiny.hf_model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    with torch.no_grad():
        ref = other(torch.tensor([PROMPT])).logits[0]
    params = GGMLParams(gqa=2, rms_norm_eps=1e-5, rope_theta=5e5)
    torch.testing.assert_close(logits(open_model_source(ggml_file(tiny), params)), ref, atol=1e-4, rtol=0)
    assert not torch.allclose(logits(open_model_source(ggml_file(tiny), PARAMS)), ref, atol=1e-3)


def test_tokenizer_from_the_vocabulary(tiny: Tiny) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny.spm_model))
    path = ggml_file(tiny)
    tok = load_tokenizer(GGMLFile(path, PARAMS), str(path))
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 258]) == ["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]
    assert tok.convert_ids_to_tokens([259]) == [sp.id_to_piece(259)]
    assert (tok.bos_token_id, tok.eos_token_id, tok.vocab_size) == (1, 2, len(tiny.vocab))
    # No text starting with whitespace: sentencepiece adds its "▁" prefix before a leading space too, while
    # transformers' Metaspace does not, nor mistralpy's SentencePiece tokenizer for GGUF (see test_tokenizer).
    for text in [*(t.lstrip() for t in CORPUS), "zebra ☃ 👋🏽 unseen", "The fox.\n\nNew  paragraph  ", ""]:
        ids = tok.encode(text)
        assert ids == [1, *sp.encode(text)], text
        assert tok.decode(ids) == sp.decode(ids[1:]), text
    assert tok.decode([1, *sp.encode("Hello world"), 2]) == "Hello world"


def test_open_model_source_dispatch(tiny: Tiny, tmp_path: Path) -> None:
    renamed = tmp_path / "legacy.weights"  # recognised by its magic whatever its name
    renamed.write_bytes(ggml_file(tiny).read_bytes())
    assert isinstance(open_model_source(renamed, PARAMS), GGMLFile)
    gguf = gguf_file(tiny)
    assert isinstance(open_model_source(gguf, GGMLParams(context_length=100)), GGUFFile)  # max_model_len: any format
    for source in (gguf, tiny.folder / "hf"):
        with pytest.raises(InvalidRequestError, match="gqa, rms_norm_eps only apply to legacy GGML files"):
            open_model_source(source, PARAMS)
    (tmp_path / "x.ggml").write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(ModelLoadError, match="not a GGML file"):
        open_model_source(tmp_path / "x.ggml")
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(ModelLoadError, match="unsupported model file"):
        open_model_source(tmp_path / "pytorch_model.bin")


def _tensor_start(tiny: Tiny) -> int:
    return 8 + 28 + sum(8 + len(text) for text, _ in tiny.vocab)


@pytest.mark.parametrize("where", ["version", "hparams", "vocab", "tensor header", "tensor name", "tensor data"])
def test_truncated(tiny: Tiny, tmp_path: Path, where: str) -> None:
    start = _tensor_start(tiny)
    keep = {"version": 6, "hparams": 20, "vocab": 900, "tensor header": start + 6, "tensor name": start + 30}
    path = tmp_path / "cut.bin"
    data = ggml_file(tiny).read_bytes()
    path.write_bytes(data[: keep.get(where, len(data) - 100)])
    with pytest.raises(ModelLoadError, match="truncated or corrupt GGML file: .*cut.bin") as info:
        GGMLFile(path, PARAMS)
    assert "\n" not in str(info.value)


def _hparams(tiny: Tiny) -> tuple[int, ...]:
    return (len(tiny.vocab), 64, 256, 4, 2, 16, 0)


@pytest.mark.parametrize(
    ("magic", "version", "message"),
    [
        (0x67676D6C, 0, "unversioned GGML file: only ggjt v3 files are read; convert it to GGUF"),
        (0x67676D66, 1, "GGMF file: only ggjt v3"),
        (0x67676A74, 2, "ggjt v2 file: only ggjt v3"),
        (0x67676A74, 1, "ggjt v1 file: only ggjt v3"),
    ],
)
def test_older_formats(tiny: Tiny, tmp_path: Path, magic: int, version: int, message: str) -> None:
    path = tmp_path / "old.bin"
    write_ggml(path, _hparams(tiny), tiny.vocab, llama_tensors(tiny.hf_model, Q.F32), magic=magic, version=version)
    with pytest.raises(ModelLoadError, match=message):
        open_model_source(path, PARAMS)


@pytest.mark.parametrize(
    ("replace", "new", "message"),
    [
        ("norm.weight", ("norm.weight", np.zeros((4, 144), np.uint8), Q.Q4_K, (4, 256)),
         "'norm.weight' .* has type Q4_K; GGML files are read with F32, F16, Q4_0"),
        ("norm.weight", ("layers.0.attention.wqkv.weight", np.zeros(64, np.float32), Q.F32, (64,)),
         "unexpected tensor 'layers.0.attention.wqkv.weight'"),
        ("norm.weight", ("tok_embeddings.weight", np.zeros(64, np.float32), Q.F32, (64,)),
         "duplicate tensor 'tok_embeddings.weight'"),
        ("layers.0.feed_forward.w1.weight", ("layers.5.ffn_norm.weight", np.zeros(64, np.float32), Q.F32, (64,)),
         "lacks tok_embeddings .* or layers.0.feed_forward.w1"),
    ],
)  # fmt: skip
def test_bad_tensors(tiny: Tiny, tmp_path: Path, replace: str, new: tuple, message: str) -> None:
    tensors = [new if name == replace else (name, *rest) for name, *rest in llama_tensors(tiny.hf_model, Q.F32)]
    write_ggml(tmp_path / "bad.bin", _hparams(tiny), tiny.vocab, tensors)
    with pytest.raises(ModelLoadError, match=message):
        GGMLFile(tmp_path / "bad.bin", PARAMS)


def test_corrupt_directory(tiny: Tiny, tmp_path: Path) -> None:
    data = bytearray(ggml_file(tiny).read_bytes())
    tensor_start = _tensor_start(tiny)
    for offset, value, message in [(tensor_start + 8, 4, "unknown type id 4"), (tensor_start, 9, "has 9 dimensions")]:
        bad = bytearray(data)
        bad[offset : offset + 4] = struct.pack("<I", value)
        (tmp_path / "bad.bin").write_bytes(bytes(bad))
        with pytest.raises(ModelLoadError, match=f"truncated or corrupt GGML file: .*{message}"):
            GGMLFile(tmp_path / "bad.bin", PARAMS)
    bad = bytearray(data)
    bad[8 + 20 : 8 + 24] = struct.pack("<I", 5)  # n_rot 5 with 16-wide heads
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    with pytest.raises(ModelLoadError, match="invalid hyper-parameters .*n_rot 5"):
        GGMLFile(tmp_path / "bad.bin", PARAMS)
