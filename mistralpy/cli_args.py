"""The command-line flags `run`, `serve` and `bench` share, and how they become EngineConfig / LLM keyword
arguments (argparse only: the commands import this without loading the engine)."""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser, several: bool = False) -> None:
    """`several`: -m may be repeated (serve: one engine a model)."""
    p.add_argument(
        "-m",
        "--model",
        default=None,
        action="append" if several else "store",
        help="GGUF file, legacy GGML file or Hugging Face model folder (default: the embedded SmolLM2-135M Q4_1)"
        + ("; repeat it to serve several models" if several else ""),
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="compute dtype (default: auto, the fastest on this CPU)",
    )
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--mmproj", default=None, help="a llama.cpp projector GGUF: images for a Gemma 3 text GGUF")
    p.add_argument(
        "--kv-cache-dtype", default=None, choices=["auto", "int8"],
        help="KV cache rows: auto (the compute dtype) or int8 (codes and a scale a row: about half the memory); "
        "default: int8 for quantized weights, else auto",
    )  # fmt: skip
    p.add_argument(
        "--kv-cache-tokens", type=int, default=16384,
        help="tokens the KV pool holds, at least the context length (default 16384); its pages are taken as used "
        "(CPU; a CUDA engine's pool is sized by --gpu-memory-utilization)",
    )  # fmt: skip
    p.add_argument(
        "--prefix-cache-tokens", type=int, default=None,
        help="finished requests' tokens kept in the prefix cache before the oldest are reused (default: a quarter of "
        "--kv-cache-tokens; all of it is vLLM's policy, and the most memory)",
    )  # fmt: skip
    p.add_argument(
        "--isq", default=None, choices=["q4_0", "q4_1", "q8_0", "q4_k"],
        help="in-situ quantization of a full-precision model's weights at load",
    )  # fmt: skip
    p.add_argument(
        "--weights", default="auto", choices=["auto", "quantized", "dequantized"],
        help="a GGUF file's quantized weights: kept quantized (auto: for bf16 and float32) or dense in the dtype",
    )  # fmt: skip
    # Legacy GGML files record none of these (--max-model-len is their context length, default 2048); GGUF files and
    # HF folders do, so giving one for those is an error rather than a silent override.
    ggml = "legacy GGML (ggjt v3) models only, an error for others"
    p.add_argument("--gqa", type=int, default=None, help=f"n_head / n_head_kv: 8 for LLaMA-2 70B (default 1; {ggml})")
    p.add_argument("--rope-theta", type=float, default=None, help=f"RoPE base (default 10000; {ggml})")
    p.add_argument(
        "--rms-norm-eps", type=float, default=None,
        help=f"RMSNorm epsilon: 1e-5 for LLaMA-2, 1e-6 for LLaMA-1 (default 5e-6; {ggml})",
    )  # fmt: skip
    p.add_argument(
        "--tensor-parallel-size", type=int, default=1,
        help="ranks the model is sharded over: workers spawned here, or torchrun's ranks on every node "
        "(torch.distributed: NCCL on GPUs, gloo on CPUs; docs/DEPLOYMENT.md); default 1",
    )  # fmt: skip
    add_device_args(p)
    add_speculative_args(p)
    add_device_layer_args(p)


def add_device_layer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device-layers", default=None,
        help="decoder layers per device, in order: 'cuda:0:20;cpu:10' (each layer's KV cache on its device)",
    )  # fmt: skip
    p.add_argument(
        "--n-gpu-layers", "-ngl", type=int, default=None,
        help="llama.cpp's -ngl: its last N slots on cuda:0, the LM head counted as one (N > layers: all of them)",
    )  # fmt: skip
    p.add_argument(
        "--enforce-eager", action="store_true",
        help="no CUDA graphs: decode steps run eagerly (on the CPU they always do)",
    )  # fmt: skip


def add_device_args(p: argparse.ArgumentParser) -> None:
    """Where the engine runs (mistralpy/device.py)."""
    p.add_argument(
        "--device", default="auto",
        help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N (default: auto)",
    )  # fmt: skip
    p.add_argument(
        "--gpu-memory-utilization", type=float, default=None,
        help="CUDA only: the share of the GPU's memory the engine fills, its KV pool sized to what the weights and a "
        "profile step leave (default 0.9; an error with --device cpu)",
    )  # fmt: skip


def add_speculative_args(p: argparse.ArgumentParser) -> None:
    """vLLM's speculative decoding flags (spec_decode.config.SpeculativeConfig)."""
    p.add_argument("--speculative-method", default=None, choices=["ngram"], help="speculative decoding: ngram")
    p.add_argument("--speculative-model", default=None, help="a draft model (GGUF or HF folder, the same tokenizer)")
    p.add_argument("--speculative-quantization", default=None, help="in-situ quantization of the draft model (ISQ)")
    p.add_argument("--num-speculative-tokens", type=int, default=None, help="draft tokens per step, K (default 4)")
    p.add_argument("--prompt-lookup-min", type=int, default=None, help="ngram: shortest suffix matched (default 1)")
    p.add_argument("--prompt-lookup-max", type=int, default=None, help="ngram: longest suffix matched (default 4)")


def add_chat_template_arg(p: argparse.ArgumentParser) -> None:
    """`run` and `serve` only: `bench` sends token ids, so a template there would do nothing."""
    p.add_argument(
        "--chat-template", metavar="FILE", default=None,
        help="a Jinja chat template file to use instead of the model's own (checked at start-up)",
    )  # fmt: skip


def engine_options(args: argparse.Namespace) -> dict[str, float | int | str | None]:
    """The model flags past -m, --dtype and --max-model-len, as EngineConfig / LLM keyword arguments."""
    from .chat_template import read_chat_template

    template = vars(args).get("chat_template")
    return {
        "quantization": args.isq,
        "weights": args.weights,
        "kv_cache_dtype": args.kv_cache_dtype,
        "kv_cache_tokens": args.kv_cache_tokens,
        "prefix_cache_tokens": args.prefix_cache_tokens,
        "chat_template": read_chat_template(template) if template is not None else None,
        "speculative_config": speculative_options(args),
        "mmproj": vars(args).get("mmproj"),
        "tensor_parallel_size": vars(args).get("tensor_parallel_size", 1),
        "device": args.device,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "device_layers": vars(args).get("device_layers"),
        "n_gpu_layers": vars(args).get("n_gpu_layers"),
        "enforce_eager": bool(vars(args).get("enforce_eager")),
        **ggml_options(args),
    }


def speculative_options(args: argparse.Namespace) -> dict[str, int | str] | None:
    """The --speculative-* flags as a speculative_config dict; None where speculation is off. A K or lookup size
    without a method or model is an error, never ignored."""
    from .errors import InvalidRequestError

    names = ("num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max", "speculative_quantization")
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    method, model = getattr(args, "speculative_method", None), getattr(args, "speculative_model", None)
    if method is None and model is None:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise InvalidRequestError(f"{flags} needs --speculative-method or --speculative-model")
        return None
    config: dict[str, int | str] = dict(given)
    if "speculative_quantization" in config:
        config["quantization"] = config.pop("speculative_quantization")
    if method is not None:
        config["method"] = method
    if model is not None:
        config["model"] = model
    return config


def ggml_options(args: argparse.Namespace) -> dict[str, float | int | None]:
    """The legacy GGML hyper-parameters given on the command line, as EngineConfig / LLM keyword arguments."""
    return {"gqa": args.gqa, "rope_theta": args.rope_theta, "rms_norm_eps": args.rms_norm_eps}


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    # llama.cpp's defaults, which users of a local chat CLI expect.
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    p.add_argument("--top-k", type=int, default=40, help="0 = off (default 40)")
    p.add_argument("--min-p", type=float, default=0.05, help="0 = off (default 0.05)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most (default 256)")
