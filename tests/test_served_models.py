"""`serve -m A -m B` and `serve --config models.toml`: names, the KV budget's split, adapters, and clear errors for
what a file gets wrong; then one live server from a file, its models answering as transformers does and one loaded
at run time by path."""

from __future__ import annotations

import argparse
import re
import signal

import pytest
from transformers import AutoTokenizer

from mistralpy.config import EngineConfig
from mistralpy.errors import InvalidRequestError
from mistralpy.server.served_models import served_models

from .helpers import make_tiny_llama
from .server_process import ServerProcess, http
from .test_multi_model import PROMPT, hf_greedy

BASE = EngineConfig(kv_cache_tokens=4096)


def args(*, model=None, names=None, config=None) -> argparse.Namespace:
    return argparse.Namespace(model=model, served_model_name=names, config=config)


def test_flags_name_the_models_and_split_the_kv_budget_equally():
    models, default = served_models(args(model=["/m/one.gguf", "/m/two"]), BASE, {})
    assert [(m.name, m.config.model, m.config.kv_cache_tokens) for m in models] == [
        ("one", "/m/one.gguf", 2048), ("two", "/m/two", 2048)
    ]  # fmt: skip
    assert default is None
    [only], _ = served_models(args(model=["/m/one.gguf"]), BASE, {})
    assert (only.name, only.config.kv_cache_tokens) == ("default", 4096)  # one model: as before, the whole budget
    named, _ = served_models(args(model=["/a", "/b"], names=["x", "y"]), BASE, {})
    assert [m.name for m in named] == ["x", "y"]
    with pytest.raises(InvalidRequestError, match="given 1 times for 2 models"):
        served_models(args(model=["/a", "/b"], names=["x"]), BASE, {})
    with pytest.raises(InvalidRequestError, match="'same' is used twice"):
        served_models(args(model=["/a/same", "/b/same"]), BASE, {})


def write(tmp_path, text: str, name: str = "models.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_file_sets_each_model_and_shares_the_budget(tmp_path):
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    path = write(
        tmp_path,
        """
default_model = "small"
kv_cache_tokens = 8000
[[models]]
name = "big"
model = "big.gguf"
dtype = "float32"
isq = "q8_0"
kv_cache_share = 3
chat_template = "t.jinja"
[models.lora]
sql = "adapters/sql"
[[models]]
name = "small"
model = "/abs/small"
kv_cache_share = 1
[[models]]
name = "fixed"
kv_cache_tokens = 1000
max_model_len = 256
""",
    )
    models, default = served_models(args(config=path), BASE, {"extra": None})
    by = {m.name: m for m in models}
    assert default == "small"
    assert by["big"].config.model == str(tmp_path / "big.gguf") and by["small"].config.model == "/abs/small"
    assert (by["big"].config.dtype, by["big"].config.quantization) == ("float32", "q8_0")
    assert by["big"].config.chat_template.startswith("{% for m in messages %}")
    assert by["fixed"].config.model is None and by["fixed"].config.max_model_len == 256  # the embedded model
    # 1000 fixed; the 7000 left split 3 : 1
    assert [by[n].config.kv_cache_tokens for n in ("big", "small", "fixed")] == [5250, 1750, 1000]
    assert by["big"].lora_modules["sql"].lora_path == str(tmp_path / "adapters/sql")
    assert set(by["small"].lora_modules) == {"extra"}  # --lora adapters go to the default model


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[models]]\nmodel = 'x'", "'name'"),
        ("[[models]]\nname = 'a'\ncolour = 'red'", r"unknown keys \['colour'\]"),
        ("models = []", "non-empty list"),
        ("default_model = 'q'\n[[models]]\nname = 'a'", "default_model 'q'"),
        ("[[models]]\nname = 'a'\nkv_cache_share = 0", "kv_cache_share must be a number > 0"),
        ("[[models]]\nname = 'a'\nkv_cache_share = 1\nkv_cache_tokens = 5", "not both"),
        ("[[models]]\nname = 'a'\n[[models]]\nname = 'a'", "'a' is used twice"),
        ("[[models]]\nname = 'a'\nlora = 'x'", "'lora' must be a table"),
        ("kv_cache_tokens = 8\n[[models]]\nname = 'a'", "raise --kv-cache-tokens"),
        ("[[models]\nname = 'a'", "is not valid TOML"),
        ("port = 1\n[[models]]\nname = 'a'", r"unknown keys \['port'\]"),
    ],
)
def test_a_bad_file_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(InvalidRequestError, match=message):
        served_models(args(config=write(tmp_path, text)), BASE, {})


def test_config_excludes_model_flags_and_json_works(tmp_path):
    path = write(tmp_path, '{"models": [{"name": "a"}]}', "models.json")
    with pytest.raises(InvalidRequestError, match="give no -m"):
        served_models(args(config=path, model=["/x"]), BASE, {})
    [model], _ = served_models(args(config=path), BASE, {})
    assert model.name == "a"
    with pytest.raises(InvalidRequestError, match="cannot read the models file"):
        served_models(args(config=str(tmp_path / "missing.toml")), BASE, {})


def test_a_server_from_a_file_routes_and_loads_a_model_at_run_time(tmp_path, tiny_llama, tokenizer_dir):
    other = tmp_path / "other"
    other_model = make_tiny_llama(other, seed=7)
    for f in tokenizer_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    path = write(
        tmp_path,
        f"""
kv_cache_tokens = 4096
[[models]]
name = "gguf"
model = "{tiny_llama[2]}"
dtype = "float32"
kv_cache_share = 3
[[models]]
name = "hf"
model = "{tiny_llama[1]}"
dtype = "float32"
""",
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    want = tokenizer.decode(hf_greedy(tiny_llama[0], PROMPT, 5))
    server = ServerProcess("--config", path, "--allow-runtime-model-updating").wait_ready()
    try:
        body = {"prompt": PROMPT, "max_tokens": 5, "temperature": 0, "ignore_eos": True}
        for name in ("gguf", "hf"):
            r = http(server, "POST", "/v1/completions", key=None, json={**body, "model": name})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == want, r.text
        text = http(server, "GET", "/metrics", key=None).text
        free = dict(re.findall(r'^mistralpy:num_free_kv_blocks\{model_name="(\w+)"\} (\S+)$', text, re.M))
        assert free == {"gguf": str(3072 / 16), "hf": str(1024 / 16)}  # the 4096 tokens split 3 : 1
        r = http(server, "POST", "/v1/models/load", key=None, json={"model_id": "new", "model_path": str(other),
                                                                     "dtype": "float32"})  # fmt: skip
        assert r.status_code == 200, r.text
        r = http(server, "POST", "/v1/completions", key=None, json={**body, "model": "new"})
        assert r.json()["choices"][0]["text"] == tokenizer.decode(hf_greedy(other_model, PROMPT, 5))
        r = http(server, "POST", "/v1/models/load", key=None, json={"model_id": "bad", "model_path": "/nowhere"})
        assert r.status_code in (400, 404) and "nowhere" in r.text
        ids = [c["id"] for c in http(server, "GET", "/v1/models", key=None).json()["data"]]
        assert ids == ["gguf", "hf", "new"]
    finally:
        server.stop(signal.SIGKILL)
