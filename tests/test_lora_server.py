"""`mistralpy serve --lora name=path`: the request's `model` selects the adapter (the openai client), /v1/models lists
the adapters with their parent, an unknown name is a 404 model_not_found, a bad adapter stops the start."""

from __future__ import annotations

import signal

import openai
import pytest

from .lora_adapters import make_adapter, peft_logits
from .server_process import KEY, MODEL, ServerProcess, http

PROMPT = [1, 504, 3067, 314, 1345, 28, 2014, 9]


@pytest.fixture(scope="module")
def adapters(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora_server")
    return {
        name: (folder / name, make_adapter(tiny_llama[0], folder / name, seed=s)) for name, s in (("a1", 1), ("a2", 2))
    }


@pytest.fixture(scope="module")
def lora_server(tiny_llama, adapters):
    args = ["-m", str(tiny_llama[1]), "--dtype", "float32", "--served-model-name", MODEL, "--api-key", KEY]
    args += ["--lora", f"a1={adapters['a1'][0]}", "--lora-modules", f"a2={adapters['a2'][0]}", "--max-loras", "2"]
    args += ["--allow-runtime-lora-updating"]
    proc = ServerProcess(*args)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop(signal.SIGKILL)


def _greedy(model, n: int) -> list[int]:
    ids, out = list(PROMPT), []
    for _ in range(n):
        out.append(int(peft_logits(model, ids)[-1].argmax()))
        ids.append(out[-1])
    return out


def test_model_field_selects_the_adapter(lora_server, tiny_llama, adapters):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama[1])
    client = openai.OpenAI(base_url=f"{lora_server.url}/v1", api_key=KEY, max_retries=0)
    for name, reference in (("a1", adapters["a1"][1]), ("a2", adapters["a2"][1]), (MODEL, tiny_llama[0])):
        response = client.completions.create(
            model=name, prompt=PROMPT, max_tokens=4, temperature=0, extra_body={"ignore_eos": True}
        )
        assert response.choices[0].text == tokenizer.decode(_greedy(reference, 4)), name
        assert response.model == name


def test_adapters_field_runs_their_sum(lora_server, tiny_llama, adapters):
    """mistral.rs's `adapters` field: both adapters at once equal PEFT's sum of the two (add_weighted_adapter, cat,
    weights 1); one name equals `model`; an unknown name is a 404; naming an adapter both ways is a 400."""
    import copy

    import peft
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama[1])
    both = peft.PeftModel.from_pretrained(copy.deepcopy(tiny_llama[0]), adapters["a1"][0], adapter_name="a1")
    both.load_adapter(adapters["a2"][0], adapter_name="a2")
    both.add_weighted_adapter(["a1", "a2"], [1.0, 1.0], "sum", combination_type="cat")
    both.set_adapter("sum")
    client = openai.OpenAI(base_url=f"{lora_server.url}/v1", api_key=KEY, max_retries=0)
    for names, reference in ((["a1", "a2"], both.eval()), (["a2"], adapters["a2"][1])):
        body = {"ignore_eos": True, "adapters": names}
        response = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, extra_body=body)
        assert response.choices[0].text == tokenizer.decode(_greedy(reference, 4)), names
    with pytest.raises(openai.NotFoundError, match="the adapter 'a9' does not exist"):
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, extra_body={"adapters": ["a1", "a9"]})
    with pytest.raises(openai.BadRequestError, match="use one or the other"):
        client.completions.create(model="a1", prompt=PROMPT, max_tokens=1, extra_body={"adapters": ["a2"]})


def test_models_lists_adapters_with_parent(lora_server, adapters):
    cards = {c["id"]: c for c in http(lora_server, "GET", "/v1/models").json()["data"]}
    assert set(cards) == {MODEL, "a1", "a2"}
    assert cards["a1"]["parent"] == MODEL and cards["a2"]["parent"] == MODEL and cards[MODEL]["parent"] is None
    assert cards["a2"]["root"] == adapters["a2"][0].name
    assert http(lora_server, "GET", "/v1/models/a1").json()["parent"] == MODEL


def test_unknown_adapter_is_404(lora_server):
    client = openai.OpenAI(base_url=f"{lora_server.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="a3", prompt="hi", max_tokens=1)
    assert e.value.body["code"] == "model_not_found"


def test_load_and_unload_at_runtime(lora_server, adapters, tmp_path):
    load = {"lora_name": "a3", "lora_path": str(adapters["a1"][0])}
    response = http(lora_server, "POST", "/v1/load_lora_adapter", json=load)
    assert response.status_code == 200 and "a3" in response.text
    assert http(lora_server, "POST", "/v1/load_lora_adapter", json=load).status_code == 400  # already loaded
    client = openai.OpenAI(base_url=f"{lora_server.url}/v1", api_key=KEY, max_retries=0)
    first = client.completions.create(model="a3", prompt=PROMPT, max_tokens=3, temperature=0)
    same = client.completions.create(model="a1", prompt=PROMPT, max_tokens=3, temperature=0)
    assert first.choices[0].text == same.choices[0].text  # the same files as a1
    (tmp_path / "adapter_config.json").write_text("{}")
    bad = http(lora_server, "POST", "/v1/load_lora_adapter", json={"lora_name": "bad", "lora_path": str(tmp_path)})
    assert bad.status_code == 400 and "no adapter_model.safetensors" in bad.json()["error"]["message"]
    assert http(lora_server, "POST", "/v1/unload_lora_adapter", json={"lora_name": "a3"}).status_code == 200
    assert http(lora_server, "POST", "/v1/unload_lora_adapter", json={"lora_name": "a3"}).status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="a3", prompt=PROMPT, max_tokens=1)
    assert "a3" not in {c["id"] for c in http(lora_server, "GET", "/v1/models").json()["data"]}


def test_runtime_routes_need_the_flag():
    from mistralpy.server.app import create_app

    def paths(**kw) -> set[str]:
        return {route.path for route in create_app(lambda: None, **kw).routes}

    assert "/v1/load_lora_adapter" not in paths()
    assert {"/v1/load_lora_adapter", "/v1/unload_lora_adapter"} <= paths(lora_runtime_updates=True)


def test_bad_adapter_stops_the_start(tiny_llama, tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"garbage")
    proc = ServerProcess("-m", str(tiny_llama[1]), "--dtype", "float32", "--lora", f"bad={tmp_path}")
    proc.proc.wait(timeout=120)
    code, output = proc.stop()
    assert code == 1 and "not a readable safetensors file" in output
