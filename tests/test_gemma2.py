"""Gemma 2 against transformers (fp32) on a prompt longer than its sliding window: soft-capped attention scores and
logits, sliding and global layers mixed, from the HF folder and from a GGUF file written like llama.cpp's converter.

transformers initialises RMSNorm weights to zero; here they are random, so that (1 + weight) and the converter's
stored 1 + weight are exercised too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mistralpy.errors import UnsupportedArchitectureError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model

from .families import make_hf_model, reference_model, spec
from .families.gguf_writer import write_gguf
from .test_families import engine_logits, reference_logits

PROMPT = torch.randint(3, 49152, (40,), generator=torch.Generator().manual_seed(3)).tolist()  # > 3 windows of 12
STEPS = [7, 8, 9, 10]
ATOL = 1e-4


def build_random_norms(name: str, folder: Path, tokenizer_dir: Path, **overrides) -> tuple[torch.nn.Module, Path]:
    """(transformers reference, GGUF path) of a tiny model of the family whose norm weights are random."""
    family = spec(name)
    model = make_hf_model(family, seed=0, **overrides)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("norm.weight"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    model.save_pretrained(folder)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    reference = reference_model(folder, family)
    gguf_path = folder.parent / f"{folder.name}.gguf"
    write_gguf(family, folder, reference.config, gguf_path)
    return reference, gguf_path


def variant(folder: Path, **config) -> torch.nn.Module:
    """The same weights in transformers with some config fields changed."""
    import transformers

    cls = getattr(transformers, spec("gemma2").hf_class)
    return cls.from_pretrained(folder, attn_implementation="eager", torch_dtype=torch.float32, **config).eval()


def assert_matches(source: Path, ref: torch.Tensor) -> None:
    pre, dec = engine_logits(source, PROMPT, STEPS)
    torch.testing.assert_close(pre, ref[: len(PROMPT)], atol=ATOL, rtol=0)
    torch.testing.assert_close(dec, ref[len(PROMPT) :], atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory, tokenizer_dir):
    folder = tmp_path_factory.mktemp("gemma2_long")
    reference, gguf_path = build_random_norms("gemma2", folder, tokenizer_dir)
    return folder, gguf_path, reference_logits(reference, PROMPT + STEPS)


def test_tiny_model_has_caps_and_mixed_layers(gemma2):
    folder = gemma2[0]
    config = json.loads((folder / "config.json").read_text())
    assert config["attn_logit_softcapping"] and config["final_logit_softcapping"]
    assert config["layer_types"] == ["sliding_attention", "full_attention"] * 2
    assert len(PROMPT) > 3 * config["sliding_window"]
    for fmt in (folder, gemma2[1]):
        model = load_model(open_model_source(fmt), torch.float32)
        windows = [layer.self_attn.attn.sliding_window for layer in model.model.layers]
        assert windows == [12, None, 12, None]


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_long_prompt_matches_transformers(gemma2, fmt):
    folder, gguf_path, ref = gemma2
    assert_matches(folder if fmt == "hf" else gguf_path, ref)


@pytest.mark.parametrize(
    "change",
    [
        dict(attn_logit_softcapping=None),
        dict(final_logit_softcapping=None),
        dict(layer_types=["full_attention"] * 4),
        dict(layer_types=["sliding_attention"] * 4),
    ],
    ids=["no-attn-cap", "no-final-cap", "all-global", "all-sliding"],
)
def test_each_feature_changes_the_reference(gemma2, change):
    """Without any one of the caps, or with one attention kind for every layer, transformers' logits move far past
    the tolerance: the comparisons above would fail if mistralpy left it out."""
    folder, _, ref = gemma2
    other = reference_logits(variant(folder, **change), PROMPT + STEPS)
    assert (other - ref).abs().max().item() > 100 * ATOL


def test_layer_types_and_query_pre_attn_scalar_from_config(tmp_path, tokenizer_dir):
    """A layout other than llama.cpp's alternation, and a scale other than head_dim ** -0.5 (as the 27B model's)."""
    layer_types = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    reference, _ = build_random_norms(
        "gemma2", tmp_path / "hf", tokenizer_dir, layer_types=layer_types, query_pre_attn_scalar=16
    )
    assert_matches(tmp_path / "hf", reference_logits(reference, PROMPT + STEPS))


def test_gguf_scale_of_the_27b_layout(tmp_path, tokenizer_dir):
    """GGUF files carry no query_pre_attn_scalar: llama.cpp uses hidden / heads for 46 layers (the 27B model)."""
    reference, gguf_path = build_random_norms(
        "gemma2", tmp_path / "hf", tokenizer_dir, num_hidden_layers=46, query_pre_attn_scalar=16
    )
    assert_matches(gguf_path, reference_logits(reference, PROMPT + STEPS))


def test_gemma_norm_weights(tmp_path, tokenizer_dir):
    """Gemma (1): random (1 + weight) norms from the HF folder and from the converter's stored 1 + weight."""
    reference, gguf_path = build_random_norms("gemma", tmp_path / "hf", tokenizer_dir)
    ref = reference_logits(reference, PROMPT + STEPS)
    assert_matches(tmp_path / "hf", ref)
    assert_matches(gguf_path, ref)


def test_unsupported_activation_is_refused(gemma2, tmp_path):
    folder = tmp_path / "exact_gelu"
    shutil.copytree(gemma2[0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_activation": "gelu"}))
    with pytest.raises(UnsupportedArchitectureError, match="hidden_activation"):
        load_model(open_model_source(folder), torch.float32)
