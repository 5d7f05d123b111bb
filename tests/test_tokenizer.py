"""Tokenizer: ids and decoding equal transformers' (GGUF vocab and tokenizer.json); chat templates render like it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from mistralpy.errors import InvalidRequestError, ModelLoadError
from mistralpy.loader.default_model import default_model_path
from mistralpy.tokenizer import Tokenizer

TEXTS = [
    "Hello world! Grüße, 你好世界, こんにちは, Привет 👋🏽🚀 \n\tdef f(x):\n    return x**2  # ok\n<|im_start|>user",
    "  leading spaces,   runs of spaces\n\n\nand newlines\r\n, tabs\t\t, numbers 12345 3.14159 and 'quotes' I'm",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\nÇa va? ¿Qué tal? 😀😃😄",
    "",
]
CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is 2+2?"}],
    "system": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi 👋 你好"}],
    "multi_turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
}


def read_tokenizer_metadata(path: str | Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def metadata() -> dict:
    return read_tokenizer_metadata(default_model_path())


@pytest.fixture(scope="module")
def tok(metadata) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(metadata)


@pytest.fixture(scope="module")
def hf_tok():
    from transformers import AutoTokenizer

    path = default_model_path()
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def with_template(metadata: dict, template: str | None) -> Tokenizer:
    changed = {key: value for key, value in metadata.items() if key != "tokenizer.chat_template"}
    if template is not None:
        changed["tokenizer.chat_template"] = template
    return Tokenizer.from_gguf_metadata(changed)


@pytest.mark.parametrize("text", TEXTS)
def test_gguf_ids_and_decode_match_transformers(tok, hf_tok, text):
    ids = tok.encode(text)
    assert ids == hf_tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)


def test_gguf_special_tokens(tok):
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2  # control tokens are matched whole
    assert tok.decode(ids) == "user\nhi"
    assert tok.convert_ids_to_tokens(ids[:2]) == ["<|im_start|>", "user"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.bos_token, tok.eos_token) == (1, 2, "<|im_start|>", "<|im_end|>")
    assert tok.eos_token_ids == frozenset({2})
    assert tok.vocab_size == 49152
    assert {0, 1, 2} <= set(tok.all_special_ids)
    assert tok.encode("hi", add_special_tokens=False) == tok.encode("hi")  # add_bos_token is False


def test_gguf_bos_and_end_of_turn_from_metadata(metadata):
    tok = Tokenizer.from_gguf_metadata(
        {**metadata, "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.eot_token_id": 0}
    )
    assert tok.encode("hi") == [1, *tok.encode("hi", add_special_tokens=False)]
    assert tok.eos_token_ids == frozenset({0, 2})


def test_gguf_smollm_splits_digits_like_llama_cpp(tok):
    assert tok.convert_ids_to_tokens(tok.encode("x 2024")) == ["x", "Ġ", "2", "0", "2", "4"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tokenizer.ggml.model": "bert"}, "unsupported tokenizer model"),
        ({"tokenizer.ggml.pre": "no-such-pre"}, "unsupported tokenizer pre-tokenizer"),
        ({"tokenizer.ggml.merges": ["Ġ nonexistent"]}, "invalid GGUF tokenizer vocabulary"),
    ],
)
def test_gguf_unsupported_metadata(metadata, change, message):
    with pytest.raises(ModelLoadError, match=message):
        Tokenizer.from_gguf_metadata({**metadata, **change})


def test_folder_matches_transformers(tokenizer_dir, hf_tok):
    tok = Tokenizer.from_folder(tokenizer_dir)
    for text in TEXTS:
        assert tok.encode(text) == hf_tok.encode(text)
    assert tok.chat_template == hf_tok.chat_template
    assert (tok.bos_token_id, tok.eos_token_id, tok.eos_token_ids) == (1, 2, frozenset({2}))


def copy_folder(source: Path, target: Path, tokenizer_config: dict, tokenizer_json: dict | None = None) -> Path:
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    (target / "tokenizer.json").write_text(json.dumps({**tokenizer, **(tokenizer_json or {})}))
    config = json.loads((source / "tokenizer_config.json").read_text())
    (target / "tokenizer_config.json").write_text(json.dumps({**config, **tokenizer_config}))
    return target


def test_folder_add_bos_flag_follows_transformers(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    # tokenizer.json's post-processor wins over the config's flag, as in transformers 5
    folder = copy_folder(tokenizer_dir, tmp_path, {"add_bos_token": True})
    assert Tokenizer.from_folder(folder).encode("Hello there") == AutoTokenizer.from_pretrained(folder).encode(
        "Hello there"
    )
    # without a post-processor the flag is all there is to go by
    folder = copy_folder(tokenizer_dir, tmp_path, {"add_bos_token": True}, {"post_processor": None})
    assert Tokenizer.from_folder(folder).encode("Hello there")[0] == 1


def test_folder_generation_config_and_no_template(tokenizer_dir, tmp_path):
    folder = copy_folder(tokenizer_dir, tmp_path, {})
    (folder / "generation_config.json").write_text('{"eos_token_id": [2, 0]}')
    tok = Tokenizer.from_folder(folder)
    assert tok.eos_token_ids == frozenset({0, 2})
    assert tok.chat_template is None
    with pytest.raises(InvalidRequestError, match="no chat template"):
        tok.apply_chat_template(CONVERSATIONS["single"])


def test_folder_template_from_config(tokenizer_dir, tmp_path):
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ messages[0].content }}"}]
    folder = copy_folder(tokenizer_dir, tmp_path, {"chat_template": named})
    assert Tokenizer.from_folder(folder).apply_chat_template(CONVERSATIONS["single"]) == "What is 2+2?"


def test_folder_without_tokenizer_json(tmp_path):
    with pytest.raises(ModelLoadError, match="no tokenizer.json"):
        Tokenizer.from_folder(tmp_path)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_chat_template_matches_transformers(tok, hf_tok, name, add_generation_prompt):
    messages = CONVERSATIONS[name]
    expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected
    ids = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    assert ids == hf_tok.encode(expected, add_special_tokens=False)


def test_chat_template_variables_and_tojson(metadata, hf_tok):
    template = "{{ bos_token }}{{ messages | tojson }}{{ eos_token }}{% if flag %}!{% endif %}"
    messages = [{"role": "user", "content": "<b>你好</b> & 'x'"}]
    text = with_template(metadata, template).apply_chat_template(messages, flag=True)
    assert text == hf_tok.apply_chat_template(messages, chat_template=template, tokenize=False, flag=True)
    assert "你好" in text and "<b>" in text


def test_content_parts_are_joined(tok):
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]
    joined = tok.apply_chat_template([{"role": "user", "content": parts}])
    assert joined == tok.apply_chat_template([{"role": "user", "content": "Hello\nworld"}])


@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        (["hello"], r"messages\[0\] must be an object"),
        ([{"content": "hi"}], r"messages\[0\].role"),
        ([{"role": "user"}], "has no 'content'"),
        ([{"role": "user", "content": 3}], "must be a string"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "only text parts"),
    ],
)
def test_invalid_messages(tok, messages, message):
    with pytest.raises(InvalidRequestError, match=message):
        tok.apply_chat_template(messages)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__base__ }}",
        "{% set x = namespace() %}{{ x.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_blocks_attribute_escapes(metadata, template):
    with pytest.raises(InvalidRequestError, match="unsafe|has no attribute"):
        with_template(metadata, template).apply_chat_template(CONVERSATIONS["single"])


def test_template_errors_become_invalid_request(metadata):
    failing = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message is required') }}{% endif %}"
    with pytest.raises(InvalidRequestError, match="a system message is required"):
        with_template(metadata, failing).apply_chat_template(CONVERSATIONS["single"])
    with pytest.raises(InvalidRequestError, match="does not parse"):
        with_template(metadata, "{% for %}").apply_chat_template(CONVERSATIONS["single"])
    with pytest.raises(InvalidRequestError, match="no chat template"):
        with_template(metadata, None).apply_chat_template(CONVERSATIONS["single"])


def write_sentencepiece_gguf(folder: Path) -> Path:
    """A tiny Llama-style SentencePiece BPE vocabulary (byte fallback, user-defined and control tokens) as GGUF."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(TEXTS[:3] + ["The quick brown fox jumps over the lazy dog.", "Съешь же ещё"]) * 10)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "m"), vocab_size=400, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, user_defined_symbols=["<|im_start|>"], control_symbols=["<|im_end|>"], minloglevel=2,
    )  # fmt: skip
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "m.model").read_bytes())
    # SentencePiece piece types (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE) are llama.cpp's, from 1
    tokens, scores, types = zip(*((p.piece, p.score, p.type) for p in proto.pieces), strict=True)
    path = folder / "tiny_spm.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(list(tokens))
    writer.add_token_scores(list(scores))
    writer.add_token_types(list(types))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_sentencepiece_gguf_matches_transformers(tmp_path):
    from transformers import AutoTokenizer

    path = write_sentencepiece_gguf(tmp_path)
    tok = Tokenizer.from_gguf_metadata(read_tokenizer_metadata(path))
    hf = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in [*TEXTS, "  two leading", "zebra ☃ unseen", "<|im_end|>x <s>y"]:
        ids = tok.encode(text)
        assert ids == hf.encode(text), text
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
    assert tok.encode("Hi")[0] == 1  # SentencePiece vocabularies add BOS unless told otherwise
    assert tok.decode(tok.encode("Grüße 👋🏽", add_special_tokens=False)) == "Grüße 👋🏽"
