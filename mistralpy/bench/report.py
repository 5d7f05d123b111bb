"""What every `mistralpy bench` report starts with: the run's metadata (version, model, threads, date, machine,
torch, the ISA level) and its one-line ISA summary."""

from __future__ import annotations

import argparse
import datetime
import os
import platform

from .. import __version__, kernels


def run_meta(args: argparse.Namespace, model: str) -> dict:
    import torch

    return {
        "mistralpy": __version__, "model": model, "threads": args.threads, "repetitions": args.repetitions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
        "torch_isa": torch.backends.cpu.get_cpu_capability(), **kernels.isa_report(),
    }  # fmt: skip


def isa_line(meta: dict) -> str:
    native = "native kernels" if meta["native_kernels"] else "torch paths (native kernels not built)"
    native += ", AMX int8 tiles for 16+ rows" if meta.get("amx_tiles") else ""
    return f"ISA level: {meta['isa']} ({native}); torch's kernels: {meta['torch_isa']}"
