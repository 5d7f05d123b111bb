"""mistral.rs's way of choosing adapters through the Runner: Which.LoraGGUF with an ordering file (the `order`
adapters active by default, summed; `preload_adapters` selectable by the `adapters` field) and Which.Lora; PEFT is
the oracle (greedy tokens of the same tiny model), and bad ordering files are clear errors."""

from __future__ import annotations

import copy
import json

import peft
import pytest

from mistralpy import Runner, Which
from mistralpy.errors import InvalidRequestError, ModelNotFoundError
from mistralpy.lora.ordering import read_ordering
from mistralpy.server.protocol import CompletionRequest

from .lora_adapters import make_adapter
from .model_steps import reference_greedy

PROMPT = [1, 504, 3067, 314, 1345, 28, 2014, 9]


@pytest.fixture(scope="module")
def adapters(tiny_llama, tmp_path_factory):
    """adapters/a and adapters/b (the ordering's order), c elsewhere (preloaded); the PEFT model of each."""
    root = tmp_path_factory.mktemp("ordering")
    folders = {"a": root / "adapters" / "a", "b": root / "adapters" / "b", "c": root / "c"}
    models = {n: make_adapter(tiny_llama[0], f, seed=30 + i, r=2 + 2 * i) for i, (n, f) in enumerate(folders.items())}
    ordering = {"base_model_id": str(tiny_llama[1]), "order": ["a", "b"], "layers": {"model.layers.0.mlp": 0},
                "preload_adapters": [{"name": "c", "adapter_model_id": str(folders["c"])}]}  # fmt: skip
    (root / "ordering.json").write_text(json.dumps(ordering))
    return root, folders, models


def _text(runner: Runner, **fields) -> str:
    request = CompletionRequest(model="default", prompt=PROMPT, max_tokens=4, temperature=0, ignore_eos=True, **fields)
    return runner.send_completion_request(request).choices[0].text


def _summed(base, folders: dict) -> peft.PeftModel:
    names = list(folders)
    model = peft.PeftModel.from_pretrained(copy.deepcopy(base), folders[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(folders[name], adapter_name=name)
    model.add_weighted_adapter(names, [1.0] * len(names), "sum", combination_type="cat")
    model.set_adapter("sum")
    return model.eval()


def test_lora_gguf_with_an_ordering_file(tiny_llama, adapters):
    root, folders, models = adapters
    which = Which.LoraGGUF(
        str(tiny_llama[2]), tiny_llama[2].name, str(root / "adapters"), str(root / "ordering.json"), dtype="f32"
    )
    with Runner(which) as runner:
        decode = runner.detokenize_text
        summed = _summed(tiny_llama[0], {n: folders[n] for n in ("a", "b")})
        assert _text(runner) == decode(reference_greedy(summed, PROMPT, 4))  # the order's adapters by default
        assert _text(runner, adapters=["c"]) == decode(reference_greedy(models["c"], PROMPT, 4))
        assert _text(runner, adapters=["a"]) == decode(reference_greedy(models["a"], PROMPT, 4))
        assert _text(runner, adapters=["b", "c"]) == _text(runner, adapters=["c", "b"])
        with pytest.raises(InvalidRequestError, match="the adapter 'x' does not exist"):
            _text(runner, adapters=["x"])
        assert _text(runner) == decode(reference_greedy(summed, PROMPT, 4))  # still the default afterwards


def test_lora_plain(tiny_llama, adapters):
    _, folders, models = adapters
    with Runner(Which.Lora(str(folders["c"]), model_id=str(tiny_llama[1]), dtype="f32")) as runner:
        assert _text(runner) == runner.detokenize_text(reference_greedy(models["c"], PROMPT, 4))
        assert _text(runner, adapters=["c"]) == _text(runner)


@pytest.mark.parametrize(
    "content, words",
    [
        ("[]", "must hold a JSON object"),
        ('{"order": ["a"]}', "base_model_id must be a string"),
        ('{"base_model_id": "m", "order": "a"}', "order must be a list of adapter names"),
        ('{"base_model_id": "m", "layers": {"x": "0"}}', "layers must map module names"),
        ('{"base_model_id": "m", "preload_adapters": [{"name": "a"}]}', "preload_adapters must be"),
        ('{"base_model_id": "m", "orders": []}', "unknown keys ['orders']"),
        ("{", "is not valid JSON"),
    ],
)
def test_bad_ordering_files(tmp_path, content, words):
    (tmp_path / "o.json").write_text(content)
    with pytest.raises(InvalidRequestError) as e:
        read_ordering(tmp_path / "o.json")
    assert words in str(e.value)


def test_ordering_adapter_not_found(tmp_path):
    (tmp_path / "o.json").write_text('{"base_model_id": "m", "order": ["zz"]}')
    with pytest.raises(ModelNotFoundError, match="adapter 'zz': no adapter_config.json"):
        read_ordering(tmp_path / "o.json").adapters(tmp_path)


def test_lora_ggml_with_an_ordering_file(tmp_path_factory, tmp_path):
    """A Q8_0 GGML base (weights kept quantized, the adapter beside them) with the ordering's adapter active: PEFT's
    greedy tokens on the dequantized weights, with llama.cpp's legacy RMSNorm epsilon that the file does not record."""
    import gguf

    from mistralpy.lora.layer import LoRALinear
    from mistralpy.quant.quantized_linear import QuantizedLinear

    from .ggml_files import ggml_file, make_tiny
    from .test_lora import _dequantized_copy
    from .test_xlora_which import _with_eps

    tiny = make_tiny(tmp_path_factory)
    base = _with_eps(_dequantized_copy(tiny.hf_model, gguf.GGMLQuantizationType.Q8_0), 5e-6)
    reference = make_adapter(base, tmp_path / "adapters" / "a", seed=7, r=4)
    (tmp_path / "o.json").write_text(json.dumps({"base_model_id": "hub/id", "order": ["a"]}))
    path = ggml_file(tiny, gguf.GGMLQuantizationType.Q8_0)
    folder = str(tmp_path / "adapters")
    which = Which.LoraGGML(str(path.parent), path.name, folder, str(tmp_path / "o.json"), gqa=2, dtype="f32")
    ids = [1, 5, 100, 300, 42, 7, 260, 383]
    with Runner(which) as runner:
        layers = runner.call(lambda e: [m for m in e.model_runner.model.modules() if isinstance(m, LoRALinear)])
        assert layers and all(isinstance(m.base, QuantizedLinear) for m in layers)
        request = CompletionRequest(model="default", prompt=ids, max_tokens=4, temperature=0, ignore_eos=True)
        text = runner.send_completion_request(request).choices[0].text
        assert text == runner.detokenize_text(reference_greedy(reference, ids, 4))
        assert text != runner.detokenize_text(reference_greedy(base, ids, 4))  # the adapter changes the answer
