"""Gemma 3 (text) against transformers (fp32) on a prompt more than 3 windows long: 5 sliding layers, a global one,
a sliding one again; the two rotary bases, linear scaling on the global layers only, (1 + w) q/k norms and the four
layer norms all random (transformers initialises norms to zero), from the HF folder (as transformers 5 saves it, and
as the Hub's configs spell it) and from a GGUF file written like llama.cpp's converter."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mistralpy.config import ModelConfig
from mistralpy.engine.engine import load_tokenizer
from mistralpy.errors import ModelLoadError, UnsupportedArchitectureError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.models.gemma3 import sliding_layers

from .test_families import reference_logits
from .test_family_chat_templates import template, write_tokenizer_gguf
from .test_gemma2 import ATOL, PROMPT, STEPS, assert_matches, build_random_norms

WINDOW = 12


def variant(folder, **config) -> torch.nn.Module:
    """The same weights in transformers with some config fields changed."""
    from transformers import Gemma3ForCausalLM

    return Gemma3ForCausalLM.from_pretrained(
        folder, attn_implementation="eager", torch_dtype=torch.float32, **config
    ).eval()


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory, tokenizer_dir):
    folder = tmp_path_factory.mktemp("gemma3_long")
    reference, gguf_path = build_random_norms("gemma3", folder, tokenizer_dir)
    return folder, gguf_path, reference_logits(reference, PROMPT + STEPS)


def test_tiny_model_layout(gemma3):
    """Each layer's window and rotary, as the config (HF) or llama.cpp's defaults (GGUF) lay them out."""
    folder, gguf_path, _ = gemma3
    config = json.loads((folder / "config.json").read_text())
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"]
    assert len(PROMPT) > 3 * config["sliding_window"] == 3 * WINDOW
    for fmt in (folder, gguf_path):
        model = load_model(open_model_source(fmt), torch.float32)
        attns = [layer.self_attn for layer in model.model.layers]
        assert [a.attn.sliding_window for a in attns] == [WINDOW] * 5 + [None, WINDOW]
        assert [(a.rotary.theta, a.rotary.scaling) for a in attns] == [(1e4, None)] * 5 + [
            (1e6, {"rope_type": "linear", "factor": 8.0}),
            (1e4, None),
        ]
        assert model.rotary is attns[5].rotary  # the engine's rotary: the global layers'
        assert all(a.rotary.cos is not None for a in attns)  # both tables built at load


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_long_prompt_matches_transformers(gemma3, fmt):
    folder, gguf_path, ref = gemma3
    assert_matches(folder if fmt == "hf" else gguf_path, ref)


def test_hub_style_config(gemma3, tmp_path):
    """The Hub's config.json (transformers 4): rope_theta, rope_local_base_freq, rope_scaling and
    sliding_window_pattern in place of rope_parameters and layer_types."""
    folder = tmp_path / "hub"
    shutil.copytree(gemma3[0], folder)
    config = json.loads((folder / "config.json").read_text())
    rope = config.pop("rope_parameters")
    del config["layer_types"]
    config.update(
        rope_theta=rope["full_attention"]["rope_theta"],
        rope_local_base_freq=rope["sliding_attention"]["rope_theta"],
        rope_scaling={"rope_type": "linear", "factor": rope["full_attention"]["factor"]},
        sliding_window_pattern=6,
    )
    (folder / "config.json").write_text(json.dumps(config))
    assert_matches(folder, gemma3[2])


def _rope(full: dict, local_theta: float = 1e4) -> dict:
    return {"full_attention": full, "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}}


@pytest.mark.parametrize(
    "change",
    [
        dict(rope_parameters=_rope({"rope_type": "default", "rope_theta": 1e6})),
        dict(rope_parameters=_rope({"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0}, local_theta=1e6)),
        dict(layer_types=["full_attention"] * 7),
        dict(layer_types=["sliding_attention"] * 7),
        dict(query_pre_attn_scalar=16),
    ],
    ids=["no-linear-scaling", "one-base", "all-global", "all-sliding", "scalar"],
)
def test_each_feature_changes_the_reference(gemma3, change):
    """Without the global layers' scaling, with one rotary base, with one attention kind, or with another attention
    scale, transformers' logits move far past the tolerance: the comparisons above would fail if mistralpy left it
    out."""
    other = reference_logits(variant(gemma3[0], **change), PROMPT + STEPS)
    assert (other - gemma3[2]).abs().max().item() > 100 * ATOL


def test_final_soft_cap_where_configured(tmp_path, tokenizer_dir):
    """No Gemma 3 sets final_logit_softcapping, but its config may: the logits capped as transformers caps them."""
    reference, _ = build_random_norms("gemma3", tmp_path / "hf", tokenizer_dir, final_logit_softcapping=5.0)
    assert_matches(tmp_path / "hf", reference_logits(reference, PROMPT + STEPS))


def test_attention_soft_cap_is_refused(gemma3, tmp_path):
    """transformers' Gemma 3 keeps attn_logit_softcapping in its config and never applies it: refused, not guessed."""
    folder = tmp_path / "capped"
    shutil.copytree(gemma3[0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attn_logit_softcapping": 10.0}))
    with pytest.raises(UnsupportedArchitectureError, match="attn_logit_softcapping"):
        load_model(open_model_source(folder), torch.float32)


def _config(**extra) -> ModelConfig:
    return ModelConfig("gemma3", 10, 8, 8, 7, 1, 1, 64, extra=extra)


def test_layer_patterns():
    """GGUF's attention.sliding_window_pattern as a period or per-layer booleans; llama.cpp's period 6 without it."""
    assert sliding_layers(_config()) == [True] * 5 + [False, True]
    assert sliding_layers(_config(sliding_window_pattern=2)) == [True, False] * 3 + [True]
    flags = [True, False, False, True, True, False, True]
    assert sliding_layers(_config(sliding_window_pattern=flags)) == flags
    for bad in (0, [True] * 3, "6", True):
        with pytest.raises(ModelLoadError, match="sliding_window_pattern"):
            sliding_layers(_config(sliding_window_pattern=bad))
    with pytest.raises(ModelLoadError, match="layer_types"):
        sliding_layers(_config(layer_types=["sliding_attention"] * 6))


def test_family_chat_template_for_files_without_one(tmp_path):
    """A gemma3 GGUF file without tokenizer.chat_template chats with Gemma 3's released template (the test's own copy,
    tests/chat_templates/gemma3.jinja); another architecture's file still has none; a template given wins."""
    released = template("gemma3")
    gemma3 = write_tokenizer_gguf(tmp_path / "gemma3.gguf", None, "gemma3")
    assert load_tokenizer(open_model_source(gemma3), str(gemma3)).chat_template == released
    llama = write_tokenizer_gguf(tmp_path / "llama.gguf", None, "llama")
    assert load_tokenizer(open_model_source(llama), str(llama)).chat_template is None
    given = "{{ messages[0]['content'] }}"
    assert load_tokenizer(open_model_source(gemma3), str(gemma3), given).chat_template == given
    own = write_tokenizer_gguf(tmp_path / "own.gguf", given, "gemma3")
    assert load_tokenizer(open_model_source(own), str(own)).chat_template == given
