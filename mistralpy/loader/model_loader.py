"""Build a model on the meta device and load its weights with assign=True (no double allocation).

Weights of `Linear` layers (and the token embedding) stored quantized in a GGUF file stay quantized: their layers
are swapped for `quant.QuantizedLinear` / `quant.QuantizedEmbedding` modules built from the raw blocks. With
`quantization` (ISQ), full-precision `Linear` weights are quantized at load into the same modules.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from tqdm import tqdm

from .. import kernels
from ..config import ModelConfig
from ..errors import InvalidRequestError, ModelLoadError
from ..layers.native import bind_native
from ..layers.rotary import RotaryEmbedding
from ..models import resolve_model_class
from ..quant import isq
from .gguf import GGUFFile
from .load_memory import release_file_pages, release_load_memory
from .mmproj import attach_mmproj
from .quantized_weights import (
    FLOAT_TYPES,
    RawPart,
    all_float,
    check_supported,
    concat_parts,
    dense_from_parts,
    embedding_from_part,
    keep_quantized,
    linear_from_parts,
    replace_module,
    split_experts,
    weight_kind,
)

_LAYER = re.compile(r"^blk\.(\d+)\.")
_ANY_LAYER = re.compile(r"^(?:blk|model\.layers)\.(\d+)\.")  # GGUF's names and Hugging Face's


def load_model(
    source,
    dtype: torch.dtype,
    show_progress: bool = False,
    weights: str = "auto",
    quantization: str | None = None,
    between_modules: Callable[[], object] | None = None,
    mmproj: str | None = None,
    tensor_shard=None,
    backend: str = "native",
    sites=None,
) -> torch.nn.Module:
    """`weights`: "quantized" keeps quantized weights quantized, "dequantized" turns every weight into a dense
    `dtype` tensor (their float reference), "auto" is "quantized" for bfloat16 and float32 compute and "dequantized"
    for float16.
    `quantization`: an ISQ type (see `quant.isq.ISQ_TYPES`) for full-precision Linear weights, or None.
    `between_modules`: called after each quantized module is built (the engine's thread policy re-decides there).
    `mmproj`: a llama.cpp projector file whose vision tower joins the (Gemma 3) text model (loader/mmproj.py).
    `tensor_shard`: this rank's part of a tensor-parallel model (distributed/tensor_parallel/shard.py), or None.
    `backend`: "triton" builds GGUF weights for the Triton matmuls (a CUDA engine, device.py); the model stays on
    the CPU here, its ModelRunner moves it to its device.
    `sites`: an engine.weight_sites.WeightSites: each weight goes to its module's device as it is read, its module
    built for that site's kernels (the GPU's part of a device map keeps its GGUF blocks for Triton); None: all in
    host memory for `backend`."""
    cfg: ModelConfig = source.model_config()
    cls = resolve_model_class(cfg)
    isq_type = isq.resolve_isq(quantization)
    if isq_type is not None:
        _check_not_quantized(source, quantization)
    _check_layer_count(source, cfg)
    if tensor_shard is not None:
        tensor_shard.check(cls, cfg)
    with torch.device("meta"):
        model = cls(cfg)
        shard_model = model if tensor_shard is None else tensor_shard.build(cls, cfg)
    expected = set(model.state_dict())
    loader = _WeightReader(source, cls, cfg, model, dtype, keep_quantized(weights, dtype), isq_type)
    loader.between_modules, loader.tensor_shard, loader.backend = between_modules, tensor_shard, backend
    loader.sites = sites
    model = shard_model
    state, modules = loader.read(show_progress)
    for name, module in modules.items():
        replace_module(model, name, module)
        expected -= {f"{name}.weight", f"{name}.bias"}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ModelLoadError(
            f"weights do not match the {cfg.architecture} architecture: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, strict=False, assign=True)
    if tensor_shard is not None:
        model = tensor_shard.parallelize(model)
    if mmproj is not None:
        model = attach_mmproj(model, source, mmproj, dtype)
    for module in model.modules():  # the engine's `model.rotary`, and any other (Gemma 3's local layers' own)
        if isinstance(module, RotaryEmbedding):
            module.build_cache()
    bind_native(model, kernels.native_module() if backend == "native" else None)
    release_load_memory(source)
    return model.eval()


def _check_layer_count(source, cfg: ModelConfig) -> None:
    """Before a model of that many layers is built: the metadata may not declare more than the file has weights for."""
    indices = [int(m.group(1)) for m in map(_ANY_LAYER.match, source.tensor_names) if m is not None]
    layers = max(indices, default=-1) + 1
    if cfg.num_hidden_layers > layers and (indices or hasattr(source, "raw_tensor")):  # HF: names as expected
        raise ModelLoadError(
            f"the metadata declares {cfg.num_hidden_layers} layers, but the file holds the weights of {layers}"
        )


def _check_not_quantized(source, quantization: str) -> None:
    if not isinstance(source, GGUFFile):
        return
    stored = {source.tensor_info(n).qtype for n in source.tensor_names} - FLOAT_TYPES
    if stored:
        names = ", ".join(sorted(t.name for t in stored))
        raise InvalidRequestError(
            f"quantization={quantization!r} needs full-precision weights, but {source.path.name} is already "
            f"quantized ({names}); load it without quantization"
        )


class _WeightReader:
    """Reads every tensor once: dense ones into a state dict, quantized ones into replacement modules."""

    def __init__(self, source, cls, cfg: ModelConfig, model, dtype: torch.dtype, quantized: bool, isq_type) -> None:
        self.source, self.cls, self.cfg, self.model, self.dtype = source, cls, cfg, model, dtype
        self.is_gguf = hasattr(source, "raw_tensor")  # GGUF-style block storage and tensor names (GGUF, GGML)
        self.quantized, self.isq_type = quantized, isq_type
        self.expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}  # from the metadata
        self.state: dict[str, torch.Tensor] = {}
        self.raw: dict[str, list[RawPart]] = {}  # module name -> its weight's parts, kept as blocks
        self.modules: dict[str, torch.nn.Module] = {}
        self.between_modules: Callable[[], object] | None = None
        self.tensor_shard = None  # a tensor-parallel rank's TensorShard: each weight cut to its part in `_put`
        self.backend = "native"  # or "triton": GGUF weights for the Triton matmuls
        self.sites = None  # a WeightSites: each module's device and kernels (over `backend`)

    def read(self, show_progress: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.nn.Module]]:
        parts: dict[str, dict[int, torch.Tensor | RawPart]] = {}
        names = self.source.tensor_names
        for name in tqdm(names, desc="Loading weights", unit="tensor", disable=not show_progress, leave=False):
            hf_name = self._hf_name(name)
            if hf_name is None:
                continue
            for piece_name, tensor in self._pieces(name, hf_name):
                self._add(piece_name, tensor, parts)
        if parts:
            raise ModelLoadError(f"incomplete fused weights: {sorted(parts)[:5]}")
        if self.raw:
            missing = sorted(f"{name}.bias" for name in self.raw)
            raise ModelLoadError(
                f"weights do not match the {self.cfg.architecture} architecture: missing {missing[:5]}"
            )
        return self.state, self.modules

    def _pieces(self, name: str, hf_name: str) -> list[tuple[str, torch.Tensor | RawPart]]:
        """(HF name, weight) pairs of one stored tensor: a GGUF tensor of stacked experts ("{e}" in its HF name)
        holds one weight per expert."""
        if "{e}" not in hf_name:
            return [(hf_name, self._read(name, hf_name, self._kind(hf_name)))]
        first = hf_name.replace("{e}", "0")
        stacked = self._read(name, first, self._kind(first), stacked=True)
        return [(hf_name.replace("{e}", str(e)), w) for e, w in enumerate(split_experts(stacked))]

    def _kind(self, hf_name: str) -> str | None:
        fused = _fused_target(hf_name, self.cls.fused)
        return weight_kind(self.model, hf_name if fused is None else fused[0])

    def _add(self, hf_name: str, tensor: torch.Tensor | RawPart, parts: dict) -> None:
        fused = _fused_target(hf_name, self.cls.fused)
        if fused is None:
            self._put(hf_name, [tensor])
            return
        target, index, count = fused
        parts.setdefault(target, {})[index] = tensor
        if len(parts[target]) == count:
            pieces = parts.pop(target)
            self._put(target, [pieces[i] for i in range(count)])

    def _hf_name(self, name: str) -> str | None:
        if self.is_gguf and name in self.cls.gguf_ignored:
            return None
        if not self.is_gguf and name in getattr(self.cls, "hf_ignored", ()):
            return None
        rename = getattr(self.cls, "hf_rename", None)  # a checkpoint's names as the model's (vision-language models)
        if not self.is_gguf and rename is not None and (name := rename(name, self.cfg)) is None:
            return None
        hf_name = _gguf_to_hf(name, self.cls.gguf_to_hf) if self.is_gguf else name
        if hf_name is None:
            raise ModelLoadError(f"unexpected tensor {name!r} for architecture {self.cfg.architecture}")
        if (hf_name == "lm_head.weight" and self.cfg.tie_word_embeddings) or hf_name.endswith("rotary_emb.inv_freq"):
            return None
        return hf_name

    def _read(self, name: str, hf_name: str, kind: str | None, stacked: bool = False) -> torch.Tensor | RawPart:
        if self.is_gguf:  # before the transform reshapes it, or blocks are cut into rows
            qtype, shape = self.source.tensor_info(name)
            check_supported(name, qtype)
            if stacked and len(shape) != 3:
                raise ModelLoadError(f"tensor {name!r} of stacked experts has shape {shape}; expected 3 dimensions")
            self._check_shape(name, hf_name, shape[1:] if stacked else shape)
        if self.is_gguf and kind is not None and (self.quantized or self.isq_type is not None):
            raw, qtype, shape = self.source.raw_tensor(name)
            return RawPart(self.cls.gguf_transform(hf_name, raw, self.cfg), qtype, shape)
        if kind == "linear" and self.isq_type is not None:
            return self.source.load_tensor(name, None)  # quantized below, from the stored precision
        tensor = self.source.load_tensor(name, self.dtype)
        if not self.is_gguf:
            self._check_shape(name, hf_name, tuple(tensor.shape))
        return self.cls.gguf_transform(hf_name, tensor, self.cfg) if self.is_gguf else tensor

    def _check_shape(self, name: str, hf_name: str, shape: tuple[int, ...]) -> None:
        """A stored weight's shape against the one the metadata gives it; a part of a fused weight (q of qkv) must
        match in its columns and fit in its rows (the sum is checked when the parts are put together)."""
        fused = _fused_target(hf_name, self.cls.fused)
        expected = self.expected.get(hf_name if fused is None else fused[0])
        if expected is None:  # a name the model lacks: reported with the others once all are read
            return
        fits = shape == expected if fused is None else len(shape) == len(expected) and shape[1:] == expected[1:]
        if not fits or (fused is not None and shape[0] > expected[0]):
            what = "a part of one" if fused else "one"
            raise ModelLoadError(
                f"tensor {name!r} has shape {shape}, but the {self.cfg.architecture} metadata makes {what} of shape "
                f"{expected}"
            )

    def _put(self, target: str, pieces: list[torch.Tensor | RawPart]) -> None:
        if self.isq_type is not None and weight_kind(self.model, target) == "linear":
            pieces = [self._quantize(p) for p in pieces]
        module_name = target.rpartition(".")[0]
        rows, expected = sum(p.shape[0] for p in pieces), self.expected.get(target)
        if len(pieces) > 1 and expected is not None and rows != expected[0]:
            raise ModelLoadError(f"the parts of {target} have {rows} rows; the metadata makes {expected[0]}")
        if self.tensor_shard is not None:
            pieces = self.tensor_shard.pieces(target, pieces, self.cfg)
        if self.quantized and all(isinstance(p, RawPart) for p in pieces) and not all_float(pieces):
            self.raw[module_name] = concat_parts(pieces)
        else:
            pieces = [dense_from_parts([p], self.dtype) if isinstance(p, RawPart) else p for p in pieces]
            dense = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
            self.state[target] = dense if self.sites is None else dense.to(self.sites.site(module_name).device)
        if module_name in self.raw and self._has_all_weights(module_name):
            self._build(module_name)

    def _quantize(self, piece: torch.Tensor | RawPart) -> torch.Tensor | RawPart:
        weight = dense_from_parts([piece], torch.float32) if isinstance(piece, RawPart) else piece
        qtype = isq.isq_type_for(self.isq_type, weight.shape[1])
        if qtype is None:
            return weight.to(self.dtype)  # no block fits this row length: the layer stays dense
        return RawPart(isq.quantize(weight, qtype), qtype, tuple(weight.shape))

    def _has_all_weights(self, module_name: str) -> bool:
        declares_bias = getattr(self.model.get_submodule(module_name), "bias", None) is not None
        return not declares_bias or f"{module_name}.bias" in self.state

    def _build(self, module_name: str) -> None:
        """The quantized module, as soon as its weights are read: its blocks' transient copies are freed, and the
        file pages they were read from are handed back, one module at a time rather than all at the end."""
        parts = self.raw.pop(module_name)
        site = None if self.sites is None else self.sites.site(module_name)
        kernels = self.backend if site is None else site.kernels
        if weight_kind(self.model, f"{module_name}.weight") == "embedding":
            module = embedding_from_part(parts[0], self.cfg.tie_word_embeddings, self.dtype, kernels)
        else:
            bias = self.state.pop(f"{module_name}.bias", None)
            module = linear_from_parts(parts, bias, self.dtype, kernels)
        self.modules[module_name] = module if site is None else module.to(site.device)
        release_file_pages(self.source)
        if self.between_modules is not None:
            self.between_modules()


def _gguf_to_hf(name: str, table: dict[str, str]) -> str | None:
    m = _LAYER.match(name)
    if m is None:
        return table.get(name)
    template = table.get("blk.{i}." + name[m.end() :])
    return template.replace("{i}", m.group(1)) if template else None  # an expert index "{e}" stays


def _fused_target(hf_name: str, fused: dict[str, tuple[str, int]]) -> tuple[str, int, int] | None:
    module, _, attr = hf_name.rpartition(".")
    parent, _, part = module.rpartition(".")
    if part not in fused:
        return None
    target, index = fused[part]
    count = sum(1 for t, _ in fused.values() if t == target)
    return f"{parent}.{target}.{attr}", index, count
