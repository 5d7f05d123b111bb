"""Configuration dataclasses: built once, validated once, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .chat_template import check_chat_template
from .device import check_device_options
from .engine.device_map import check_device_map_options
from .errors import InvalidRequestError
from .kernels import isa_level
from .layers.kv_cache import check_kv_cache_dtype
from .quant.isq import resolve_isq
from .spec_decode.config import SpeculativeConfig
from .threads import check_num_threads


@dataclass
class ModelConfig:
    """Architecture hyper-parameters, read from config.json or GGUF metadata (HF names)."""

    architecture: str  # registry key, e.g. "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    head_dim: int | None = None
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific fields, kept for later architectures

    def sliding_window_of(self, layer_idx: int) -> int | None:
        """The attention window of a layer (None: global attention), from HF's sliding_window, use_sliding_window
        and layer_types ("sliding_attention" / "full_attention") fields."""
        window = self.extra.get("sliding_window")
        if window is None or self.extra.get("use_sliding_window") is False:
            return None
        layer_types = self.extra.get("layer_types")
        if layer_types is not None and layer_types[layer_idx] != "sliding_attention":
            return None
        return int(window)

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise InvalidRequestError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512  # per-step token budget: long prompts are prefilled in chunks of this size
    max_model_len: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len"):
            if getattr(self, name) < 1:
                raise InvalidRequestError(f"{name} must be >= 1")


WEIGHT_MODES = ("auto", "quantized", "dequantized")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """Map a dtype name to torch; "auto" is the ISA level's measured faster dtype (kernels/isa_level.py: bfloat16 on
    avx512 and avx2, float32 on portable; MISTRALPY_ISA forces a level)."""
    if isinstance(name, torch.dtype):
        if name in _DTYPES.values():
            return name
        raise InvalidRequestError(f"unsupported dtype {name}; use one of: auto, {', '.join(_DTYPES)}")
    if name == "auto":
        return _DTYPES[isa_level.current_level().auto_dtype]
    key = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(
        name, name
    )
    if key not in _DTYPES:
        raise InvalidRequestError(f"unsupported dtype {name!r}; use one of: auto, {', '.join(_DTYPES)}")
    return _DTYPES[key]


@dataclass
class EngineConfig:
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct GGUF
    dtype: str = "auto"
    block_size: int = 16
    num_kv_blocks: int | None = None  # None: enough for max(max_model_len, kv_cache_tokens) tokens
    kv_cache_tokens: int = 16384
    # "auto": the compute dtype; "int8": rows of int8 codes and a scale (about half of bf16); None: int8 for quantized
    # weights, else "auto" (layers.kv_cache.default_kv_cache_dtype)
    kv_cache_dtype: str | None = None
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None  # per-step token budget; None: the task's (embed.task.STEP_TOKENS)
    max_model_len: int | None = None  # None: the model's context length
    enable_prefix_caching: bool = True
    prefix_cache_tokens: int | None = None  # freed tokens kept cached (resident) for later prompts; None: a quarter
    show_progress: bool = False
    # "auto": GGUF quantized weights stay quantized when computing in bfloat16 or float32 (the quantized kernels'
    # dtypes) and are dequantized for float16; "quantized" / "dequantized" force either ("dequantized": dense weights,
    # the float reference of the quantized ones; the kernels' exact reference is
    # quant.native_linear.use_kernel_reference).
    weights: str = "auto"
    quantization: str | None = None  # in-situ quantization of full-precision Linear weights: q4_0, q4_1, q8_0, q4_k
    # What a legacy GGML file does not record (None: llama.cpp's defaults 1, 10000, 5e-6; max_model_len is its context
    # length, default 2048). GGUF files and HF folders record their own: setting these for one is an error.
    gqa: int | None = None  # grouped-query factor n_head / n_head_kv (8 for LLaMA-2 70B)
    rope_theta: float | None = None
    rms_norm_eps: float | None = None
    chat_template: str | None = None  # a Jinja template's text, used in place of the model's own
    mmproj: str | None = None  # a llama.cpp multimodal projector file joined to the (GGUF) model: loader/mmproj.py
    # CPU threads: None adapts to the cores other processes leave idle (threads.ThreadPolicy), an int fixes them
    num_threads: int | None = None
    # LoRA adapters (mistralpy.lora): slots for max_loras adapters of rank up to max_lora_rank, in every linear
    enable_lora: bool = False
    max_loras: int = 4
    max_lora_rank: int = 16
    # an X-LoRA model in PEFT's layout (mistralpy.lora.xlora), served under xlora_name (None: its folder's name);
    # xlora_log: a file the classifier's scalings are appended to (JSON lines)
    xlora: str | None = None
    xlora_name: str | None = None
    xlora_log: str | None = None
    # mistral.rs's tgt_non_granular_index: after that many completion tokens a request's X-LoRA scalings stay fixed
    # (lora/xlora/non_granular.py)
    xlora_non_granular: int | None = None
    # AnyMoE (mistralpy.lora.anymoe): an AnyMoeConfig, its dict form, or the path of its .json / .toml file
    anymoe: Any = None
    max_lora_total_rank: int | None = None  # the loaded adapters' ranks summed at most (None: no limit but the slots)
    # adapters folded into the weights at load: (PEFT folder, weight) pairs, or folders (weight 1); lora/merge.py
    lora_merge: Any = ()
    # speculative decoding (spec_decode.config.SpeculativeConfig, or vLLM's dict form of it); None: off
    speculative_config: Any = None
    task: str | None = None  # "generate" or "embed"; None: "embed" for an encoder model, else "generate"
    # embeddings' pooling: "mean", "cls" or "last"; None: the sentence-transformers folder's, else cls for an encoder
    # and last for a decoder (llama.cpp's --pooling)
    pooling: str | None = None
    # sampling defaults for fields a request leaves unset: "auto" (the folder's generation_config.json), "vllm" (none),
    # or the path of a generation_config.json (or of its folder)
    generation_config: str = "auto"
    tensor_parallel_size: int = 1  # ranks the model is sharded over (distributed/tensor_parallel): 1 process or N
    # where the engine runs (device.py): "auto" (CUDA when torch sees it, else the CPU), "cpu", "cuda" or "cuda:N";
    # gpu_memory_utilization: the share of the GPU's memory the engine may fill, KV pool included (None: 0.9; CUDA
    # only); kernels: None (the device's own), or "triton" on the CPU with TRITON_INTERPRET=1 (the GPU path's tests)
    device: str = "auto"
    gpu_memory_utilization: float | None = None
    kernels: str | None = None
    # layer offload (engine/device_map.py): "cuda:0:20;cpu:10" (device and layer count per entry, in layer order), or
    # llama.cpp's n_gpu_layers (its last N slots, the LM head counted as one, on cuda:0); None: all on the CPU
    device_layers: str | None = None
    n_gpu_layers: int | None = None
    # decode steps run eagerly, never replayed from CUDA graphs (which only a model wholly on one CUDA device uses)
    enforce_eager: bool = False

    def __post_init__(self) -> None:
        self.speculative_config = SpeculativeConfig.of(self.speculative_config)
        resolve_dtype(self.dtype)
        check_lora_limits(self.enable_lora, self.max_loras, self.max_lora_rank, self.max_lora_total_rank)
        check_xlora_options(self.xlora, self.xlora_name, self.xlora_log, self.enable_lora)
        check_non_granular(self.xlora_non_granular, self.xlora)
        self.anymoe = anymoe_config(self.anymoe, self.enable_lora or self.xlora is not None)
        if self.chat_template is not None:
            check_chat_template(self.chat_template)
        if self.weights not in WEIGHT_MODES:
            raise InvalidRequestError(f"unknown weights {self.weights!r}; choose one of: {', '.join(WEIGHT_MODES)}")
        resolve_isq(self.quantization)
        check_kv_cache_dtype(self.kv_cache_dtype)
        check_num_threads(self.num_threads)
        check_device_options(self.device, self.gpu_memory_utilization, self.kernels, self.kv_cache_dtype)
        check_device_map_options(self.device_layers, self.n_gpu_layers)
        if self.device_layers is not None or self.n_gpu_layers is not None:  # the map places the layers itself
            if self.device not in ("auto", "cpu"):
                raise InvalidRequestError("device_layers / n_gpu_layers place the layers: leave device at auto or cpu")
            self.device = "cpu"  # the engine's own tensors (the embeddings, the host steps) and its kernels: the CPU's
        if not isinstance(self.enforce_eager, bool):
            raise InvalidRequestError(f"enforce_eager must be True or False, got {self.enforce_eager!r}")
        for name in ("block_size", "kv_cache_tokens", "max_num_seqs", "tensor_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}")
        for name in ("num_kv_blocks", "max_model_len", "gqa", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidRequestError(f"{name} must be a positive integer or None, got {value!r}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            valid = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
            if value is not None and not valid:
                raise InvalidRequestError(f"{name} must be a positive number or None, got {value!r}")


def anymoe_config(value: Any, adapters: bool) -> Any:
    """None, or an AnyMoeConfig made of `value` (one, its dict form or its file's path)."""
    if value is None:
        return None
    from .lora.anymoe.config import AnyMoeConfig

    if adapters:
        raise InvalidRequestError("AnyMoE cannot be combined with LoRA adapters or an X-LoRA model")
    if isinstance(value, AnyMoeConfig):
        return value
    if isinstance(value, dict):
        return AnyMoeConfig.from_dict(value)
    if isinstance(value, str):
        return AnyMoeConfig.from_file(value)
    raise InvalidRequestError(f"anymoe must be an AnyMoeConfig, a dict or a config file's path, got {value!r}")


def check_xlora_options(xlora: object, name: object, log: object, enable_lora: bool) -> None:
    for key, value in (("xlora", xlora), ("xlora_name", name), ("xlora_log", log)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidRequestError(f"{key} must be a non-empty string, got {value!r}")
    if xlora is None and (name is not None or log is not None):
        raise InvalidRequestError("xlora_name and xlora_log need an X-LoRA model (xlora)")
    if xlora is not None and enable_lora:
        raise InvalidRequestError("an X-LoRA model and LoRA adapters (enable_lora) cannot be served together")


def check_non_granular(value: object, xlora: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequestError(f"tgt_non_granular_index must be an integer >= 1, got {value!r}")
    if xlora is None:
        raise InvalidRequestError("tgt_non_granular_index needs an X-LoRA model (xlora)")


def check_lora_limits(
    enable_lora: object, max_loras: object, max_lora_rank: object, max_lora_total_rank: object = None
) -> None:
    if not isinstance(enable_lora, bool):
        raise InvalidRequestError(f"enable_lora must be True or False, got {enable_lora!r}")
    for name, value in (("max_loras", max_loras), ("max_lora_rank", max_lora_rank)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}")
    value = max_lora_total_rank
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidRequestError(f"max_lora_total_rank must be a positive integer or None, got {value!r}")
