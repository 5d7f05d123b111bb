"""Legacy GGML files through the user interfaces: EngineConfig, `mistralpy run | serve | bench`, Runner/Which.GGML."""

from __future__ import annotations

import json

import pytest
from gguf import GGMLQuantizationType as Q

from mistralpy import LLM, SamplingParams
from mistralpy.cli import build_parser, main
from mistralpy.cli_args import ggml_options
from mistralpy.config import EngineConfig
from mistralpy.errors import InvalidRequestError, ModelLoadError
from mistralpy.server.server_app import check_model

from .ggml_files import Tiny, ggml_file, gguf_file, make_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return make_tiny(tmp_path_factory)


@pytest.mark.parametrize(
    "kwargs", [dict(gqa=0), dict(gqa=True), dict(gqa=2.0), dict(rope_theta=0.0), dict(rms_norm_eps=float("nan"))]
)
def test_engine_config_validates(kwargs: dict) -> None:
    with pytest.raises(InvalidRequestError, match=next(iter(kwargs))):
        EngineConfig(**kwargs)


def test_cli_flags_reach_the_loader(tiny: Tiny, capsys) -> None:
    path = str(ggml_file(tiny, Q.Q4_0))
    args = ["run", "-m", path, "--raw", "-p", "Hello world", "-n", "3", "--temperature", "0", "--dtype", "float32"]
    assert main([*args, "--gqa", "2", "--rms-norm-eps", "1e-5", "--max-model-len", "64"]) == 0
    printed = capsys.readouterr().out
    llm = LLM(path, dtype="float32", gqa=2, rms_norm_eps=1e-5, max_model_len=64)
    prompt = llm.get_tokenizer().encode("Hello world")
    expected = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=3))[0].outputs[0].text
    assert printed == expected + "\n"
    assert main(args) == 1
    assert "set gqa (--gqa) to 2" in capsys.readouterr().err
    assert main(["run", "-m", str(gguf_file(tiny)), "--gqa", "2", "-p", "hi", "-n", "1"]) == 1
    assert "gqa only apply to legacy GGML files" in capsys.readouterr().err
    assert check_model(EngineConfig(model=path, gqa=2)) == path  # `serve` checks the file with the flags too
    with pytest.raises(ModelLoadError, match="--gqa"):
        check_model(EngineConfig(model=path))


def test_serve_and_bench_take_the_flags(tiny: Tiny, capsys) -> None:
    flags = ["--gqa", "2", "--rope-theta", "1e6", "--rms-norm-eps", "1e-5"]
    args = build_parser().parse_args(["serve", "-m", "x.bin", *flags])
    assert ggml_options(args) == {"gqa": 2, "rope_theta": 1e6, "rms_norm_eps": 1e-5}
    path = str(ggml_file(tiny, Q.Q8_0))
    bench = ["bench", "-m", path, "-p", "8", "-n", "2", "--concurrency", "1", "-r", "1", "--json"]
    assert main([*bench, "--gqa", "2", "--rms-norm-eps", "1e-5"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert {r["test"] for r in rows} == {"pp8", "tg2", "c1 pp64+tg2"} and all(r["tok_per_s"] > 0 for r in rows)
    assert main(bench) == 1
    assert "set gqa (--gqa) to 2" in capsys.readouterr().err


def test_runner_which_ggml(tiny: Tiny) -> None:
    from mistralpy import CompletionRequest, Runner, Which

    path = ggml_file(tiny, Q.Q8_0)
    which = Which.GGML(quantized_model_id=str(path.parent), quantized_filename=path.name, gqa=2, dtype="f32")
    assert "Which.GGML(" in repr(which) and "gqa=2" in repr(which)
    with Runner(which=which) as runner:
        request = CompletionRequest(prompt="Hello", max_tokens=3, temperature=0)  # the file has no chat template
        assert runner.send_completion_request(request).usage.completion_tokens == 3
    with pytest.raises(ModelLoadError, match="--gqa"):
        Runner(which=Which.GGML(quantized_model_id=str(path), quantized_filename=path.name))
