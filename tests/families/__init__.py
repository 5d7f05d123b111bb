"""Model families under test: each module here holds one `SPEC`, a tiny random model of the family and how
llama.cpp's converter writes it to GGUF. `build(name, folder, ...)` makes the HF folder and the GGUF files."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import torch

FAMILIES = ["llama", "mistral", "mixtral", "gemma", "gemma2", "gemma3", "phi2", "phi3", "qwen2", "qwen3"]

# Shared by every tiny model: the embedded model's vocabulary, so the real tokenizer works with it.
BASE_CONFIG = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    initializer_range=0.1,
)


def _no_metadata(writer: gguf.GGUFWriter, cfg: Any) -> None:
    return None


def _no_conversion(tensors: dict[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
    return tensors


@dataclass(frozen=True)
class FamilySpec:
    name: str
    hf_class: str  # transformers model class, e.g. "Qwen2ForCausalLM"
    config_class: str  # transformers config class, e.g. "Qwen2Config"
    config: dict[str, Any]  # the tiny model's config (BASE_CONFIG plus the family's own fields)
    gguf_arch: gguf.MODEL_ARCH
    # what llama.cpp's converter does to the HF tensors before naming them (permuting, stacking experts, ...);
    # names stay HF names here, gguf's tensor-name map renames them afterwards
    convert: Callable[[dict[str, torch.Tensor], Any], dict[str, torch.Tensor]] = _no_conversion
    metadata: Callable[[gguf.GGUFWriter, Any], None] = _no_metadata  # family-specific GGUF keys
    chat_template: str | None = None  # the family's real chat template (tokenizer_config.json / GGUF)
    # test_q8_0_close_to_transformers' bound on |Q8_0 logits - reference|, as a fraction of the reference's range
    q8_0_tolerance: float = 0.02
    q8_0_argmax: float = 0.9  # and the least share of positions whose top token is the reference's
    extra_files: dict[str, str] = field(default_factory=dict)


def spec(name: str) -> FamilySpec:
    return importlib.import_module(f"{__name__}.{name}").SPEC


def make_hf_model(family: FamilySpec, seed: int = 0, **overrides) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, family.config_class)(**{**family.config, **overrides})
    model = getattr(transformers, family.hf_class)(config).eval()
    return model


def reference_model(folder: Path, family: FamilySpec) -> torch.nn.Module:
    """The saved folder loaded back by transformers (eager attention: the one that honours every option)."""
    import transformers

    cls = getattr(transformers, family.hf_class)
    return cls.from_pretrained(folder, attn_implementation="eager", torch_dtype=torch.float32).eval()


@dataclass
class FamilyFiles:
    spec: FamilySpec
    reference: torch.nn.Module  # transformers, loaded back from the folder
    folder: Path  # HF folder: config.json, safetensors, tokenizer files
    gguf: Path  # F32 GGUF
    gguf_q8: Path  # Q8_0 GGUF


def build(name: str, folder: Path, tokenizer_dir: Path, seed: int = 0, **overrides) -> FamilyFiles:
    from .gguf_writer import write_gguf

    family = spec(name)
    make_hf_model(family, seed, **overrides).save_pretrained(folder)
    for f in tokenizer_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    reference = reference_model(folder, family)
    paths = folder.parent / f"{folder.name}.gguf", folder.parent / f"{folder.name}.q8_0.gguf"
    write_gguf(family, folder, reference.config, paths[0])
    write_gguf(family, folder, reference.config, paths[1], gguf.GGMLQuantizationType.Q8_0)
    return FamilyFiles(family, reference, folder, *paths)
