"""GPU benchmark: mistralpy on CUDA against Hugging Face transformers (eager attention) on the same GPU, in the same
run, and the HBM-bandwidth bound of batch-1 decode.

  tg128 at batch 1: decode tokens/s of one request (its prefill's time taken out).
  cN: aggregate generated tokens/s of N concurrent requests (N = 1, 32, 128 by default), 128 tokens each.
  bound: bandwidth / bytes of weights read per decode token; the bandwidth measured by a device copy, or --bandwidth.

Models: the embedded GGUF, and a Llama shape with random weights built from its config (no download; gpu_models.py).
Goals (issue 25): batch-1 decode >= 70% of the bound; c128 >= 10x transformers eager.

    python -m benchmarks.gpu [--models embedded,llama-3.2-1b] [-c 1,32,128] [-n 128] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .gpu_models import SHAPES, build_random_llama

NO_CUDA = "benchmarks/gpu.py needs a CUDA device, and torch sees none (torch {version}, CUDA build: {cuda})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        type=_models,
        default=["embedded", "llama-3.2-1b"],
        help=f"comma-separated: embedded, a GGUF / HF path, or a random shape ({', '.join(SHAPES)})",
    )
    p.add_argument("-c", "--concurrency", type=_positive_ints, default=[1, 32, 128], help="concurrent requests")
    p.add_argument("-n", "--tokens", type=_positive_int, default=128, help="tokens generated a request (tg)")
    p.add_argument("-p", "--prompt-tokens", type=_positive_int, default=32, help="tokens of each prompt")
    p.add_argument("--bandwidth", type=float, default=None, help="HBM GB/s for the bound (default: measured)")
    p.add_argument("--no-transformers", action="store_true", help="mistralpy only")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "mistralpy-gpu-bench")
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    return p.parse_args(argv)  # fmt: skip


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a positive integer, got {text!r}")
    return int(text)


def _positive_ints(text: str) -> list[int]:
    return [_positive_int(part) for part in text.split(",")]


def _models(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    for name in names:
        if name != "embedded" and name not in SHAPES and not Path(name).exists():
            raise argparse.ArgumentTypeError(f"{name!r} is not embedded, a shape ({', '.join(SHAPES)}) or a path")
    return names


def no_cuda_message() -> str | None:
    """Why this benchmark cannot run here, or None where it can."""
    import torch

    if torch.cuda.is_available():
        return None
    return NO_CUDA.format(version=torch.__version__, cuda=torch.version.cuda or "none")


def bandwidth_bound(weight_bytes: int, bandwidth_gb_s: float) -> float:
    """Decode tokens/s at batch 1 if reading every weight once a token were all it cost."""
    return bandwidth_gb_s * 1e9 / weight_bytes


def decode_weight_bytes(model) -> int:
    """Bytes a decode token reads: every parameter and buffer but the input embedding table (one row of it is read),
    which counts where it is also the output projection (tied)."""
    seen, total = set(), 0
    embeds = [m for name, m in model.named_modules() if name.endswith("embed_tokens")]  # HF's name and ours
    embed = embeds[0] if embeds else None
    tied = embed is not None and getattr(model.config, "tie_word_embeddings", False)
    skip = set() if embed is None or tied else {id(t) for t in [*embed.parameters(), *embed.buffers()]}
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen or id(t) in skip:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def measure_bandwidth(gib: int = 4) -> float:
    """GB/s of a device-to-device copy (read + write), the best of 5."""
    import torch

    src = torch.empty(gib << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() / best / 1e9


def model_path(name: str, cache: Path) -> str | None:
    if name == "embedded":
        return None
    return str(build_random_llama(name, cache / name)) if name in SHAPES else name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = no_cuda_message()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    from .gpu_runs import run_model

    bandwidth = args.bandwidth or measure_bandwidth()
    report = {"bandwidth_gb_s": bandwidth, "args": {k: str(v) for k, v in vars(args).items()}, "models": []}
    for name in args.models:
        result = run_model(name, model_path(name, args.cache_dir), args)
        result["bound_tok_s"] = bandwidth_bound(result["decode_weight_bytes"], bandwidth)
        result["tg_of_bound"] = result["mistralpy"]["tg"] / result["bound_tok_s"]
        report["models"].append(result)
        print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
