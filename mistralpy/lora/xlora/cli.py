"""The serve flags of an X-LoRA model: `--xlora PATH` (mistral.rs's `--xlora-model-id` also accepted), served under
`--xlora-name` (default: the folder's name) beside the plain base model, `--xlora-log FILE` (the scalings) and
mistral.rs's `--tgt-non-granular-index N` (lora/xlora/non_granular.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import InvalidRequestError
from ..request import LoRARequest
from .config import XLORA_ID


def add_xlora_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--xlora", "--xlora-model-id", dest="xlora", metavar="PATH", default=None,
        help="an X-LoRA model (PEFT's layout) over the base: requests select it with \"model\": its name",
    )  # fmt: skip
    p.add_argument("--xlora-name", default=None, help="the X-LoRA model's name (default: its folder's name)")
    p.add_argument(
        "--xlora-log", metavar="FILE", default=None,
        help="append the X-LoRA classifier's scalings of every request to FILE (JSON lines)",
    )  # fmt: skip
    p.add_argument(
        "--tgt-non-granular-index", dest="xlora_non_granular", metavar="N", type=int, default=None,
        help="mistral.rs's non-granular X-LoRA scalings: after N completion tokens a request's scalings stay fixed "
        "and its steps skip the scaling pass",
    )  # fmt: skip


def xlora_name(args: argparse.Namespace) -> str | None:
    if args.xlora is None:
        return None
    return args.xlora_name or Path(args.xlora).resolve().name


def xlora_options(args: argparse.Namespace) -> dict[str, str | int | None]:
    """The flags as EngineConfig keyword arguments."""
    return {
        "xlora": args.xlora, "xlora_name": xlora_name(args), "xlora_log": args.xlora_log,
        "xlora_non_granular": args.xlora_non_granular,
    }  # fmt: skip


def xlora_modules(args: argparse.Namespace, served_model_name: str) -> dict[str, LoRARequest]:
    """The X-LoRA model as a selectable adapter (the server's `model` field), or nothing."""
    name = xlora_name(args)
    if name is None:
        return {}
    if name == served_model_name:
        raise InvalidRequestError(f"--xlora-name {name!r} is the served model's name; give the X-LoRA model another")
    return {name: LoRARequest(name, XLORA_ID, args.xlora)}
