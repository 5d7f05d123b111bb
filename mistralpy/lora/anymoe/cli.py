"""`serve --anymoe-config FILE`: an AnyMoE mixture from a .json or .toml file (mistral.rs's `[anymoe]` table form)."""

from __future__ import annotations

import argparse


def add_anymoe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--anymoe-config", metavar="FILE", default=None,
        help="make the model an AnyMoE mixture as FILE (.json / .toml) says; its gates are trained at load unless "
        "its gate_model_id folder holds them",
    )  # fmt: skip


def anymoe_options(args: argparse.Namespace) -> dict[str, str | None]:
    """The flag as EngineConfig keyword arguments (the file is read and checked there)."""
    return {"anymoe": args.anymoe_config}
