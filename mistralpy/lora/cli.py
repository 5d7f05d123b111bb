"""The serve flags for LoRA adapters, in vLLM's form: `--lora name=path` (also `--lora-modules`, repeatable or
several after one flag), `--enable-lora`, `--max-loras`, `--max-lora-rank`; mistralpy's `--max-lora-total-rank` and
`--lora-merge PATH[=WEIGHT]` (serve and run)."""

from __future__ import annotations

import argparse
import os

from ..errors import InvalidRequestError
from .request import LoRARequest

RUNTIME_UPDATES_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def runtime_updates(args: argparse.Namespace) -> bool:
    return args.allow_runtime_lora_updating or os.environ.get(RUNTIME_UPDATES_ENV, "").lower() in ("1", "true")


def add_lora_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lora", "--lora-modules", dest="lora_modules", metavar="NAME=PATH", nargs="+", action="extend", default=[],
        help="a PEFT LoRA adapter folder served under NAME: requests select it with \"model\": NAME (repeatable)",
    )  # fmt: skip
    p.add_argument("--enable-lora", action="store_true", help="allow LoRA adapters (implied by --lora)")
    p.add_argument("--max-loras", type=int, default=4, help="adapters loaded at once (default 4)")
    p.add_argument("--max-lora-rank", type=int, default=16, help="highest adapter rank (default 16)")
    p.add_argument(
        "--max-lora-total-rank", type=int, default=None,
        help="the loaded adapters' ranks summed at most; idle adapters are unloaded (LRU) to make room (default: none)",
    )  # fmt: skip
    add_lora_merge_arg(p)
    p.add_argument(
        "--allow-runtime-lora-updating", action="store_true",
        help="serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter (implies --enable-lora; also set by "
        f"vLLM's {RUNTIME_UPDATES_ENV}=true)",
    )  # fmt: skip


def add_lora_merge_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lora-merge", metavar="PATH[=WEIGHT]", action="append", default=[],
        help="fold a PEFT LoRA adapter (times WEIGHT, default 1) into the weights at load; repeat to merge a weighted "
        "sum; quantized weights are re-quantized to their GGUF type",
    )  # fmt: skip


def lora_merge_option(args: argparse.Namespace) -> list[tuple[str, float]]:
    """PATH or PATH=WEIGHT (a path holding "=" is taken whole unless what follows the last "=" is a number)."""
    pairs = []
    for item in args.lora_merge:
        path, sep, weight = item.rpartition("=")
        try:
            pairs.append((path, float(weight)) if sep and path else (item, 1.0))
        except ValueError:
            pairs.append((item, 1.0))
    return pairs


def lora_modules(args: argparse.Namespace, served_model_name: str) -> dict[str, LoRARequest]:
    """NAME=PATH pairs -> adapters by name, ids 1, 2, ... in the order given."""
    modules: dict[str, LoRARequest] = {}
    for item in args.lora_modules:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InvalidRequestError(f"--lora takes NAME=PATH, got {item!r}")
        if name in modules or name == served_model_name:
            raise InvalidRequestError(f"--lora name {name!r} is used twice (adapters and the served model)")
        modules[name] = LoRARequest(name, len(modules) + 1, path)
    return modules


def lora_options(args: argparse.Namespace) -> dict[str, object]:
    """The flags as EngineConfig keyword arguments."""
    return {
        "enable_lora": bool(args.enable_lora or args.lora_modules or runtime_updates(args)),
        "max_loras": args.max_loras,
        "max_lora_rank": args.max_lora_rank,
        "max_lora_total_rank": args.max_lora_total_rank,
        "lora_merge": lora_merge_option(args),
    }
