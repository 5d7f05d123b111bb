"""The GPU benchmark's timed runs of one model: mistralpy on CUDA, then transformers eager on the same GPU (one at a
time in memory). Every request decodes exactly `tokens` tokens (EOS ignored) from a prompt of `prompt_tokens` ids."""

from __future__ import annotations

import argparse
import gc
import time

import torch

from mistralpy import LLM, SamplingParams


def prompts(count: int, length: int, vocab: int) -> list[list[int]]:
    """Distinct prompts (no prefix-cache hits), ids below the embedded tokenizer's vocabulary."""
    g = torch.Generator().manual_seed(count)
    return torch.randint(100, min(vocab, 49152), (count, length), generator=g).tolist()


def _timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def run_mistralpy(path: str | None, args: argparse.Namespace) -> tuple[dict, int]:
    from .gpu import decode_weight_bytes

    llm = LLM(path, dtype="bfloat16", device="cuda", gpu_memory_utilization=args.gpu_memory_utilization,
              max_num_seqs=max(args.concurrency), max_model_len=args.prompt_tokens + args.tokens + 16)  # fmt: skip
    model = llm.engine.model_runner.model
    vocab = model.config.vocab_size

    def generate(batch: list[list[int]], n: int) -> None:
        llm.generate(batch, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True), use_tqdm=False)

    return _rates(generate, vocab, args), decode_weight_bytes(model)


def run_transformers(path: str | None, args: argparse.Namespace) -> dict:
    import os

    from transformers import AutoModelForCausalLM

    from mistralpy.loader.default_model import default_model_path

    if path is None:  # the embedded GGUF, dequantized by transformers
        gguf = default_model_path()
        kwargs = dict(gguf_file=os.path.basename(gguf))
        path = os.path.dirname(gguf)
    else:
        kwargs = {}
    model = AutoModelForCausalLM.from_pretrained(
        path, torch_dtype=torch.bfloat16, attn_implementation="eager", **kwargs
    ).cuda()  # fmt: skip
    vocab = model.config.vocab_size

    def generate(batch: list[list[int]], n: int) -> None:
        ids = torch.tensor(batch, device="cuda")
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)  # fmt: skip

    return _rates(generate, vocab, args)


def _rates(generate, vocab: int, args: argparse.Namespace) -> dict:
    """tg (batch 1, the first token's time taken out) and aggregate tokens/s at each concurrency, after a warm-up
    (Triton compiles its kernels there)."""
    generate(prompts(2, args.prompt_tokens, vocab), 8)
    one = prompts(1, args.prompt_tokens, vocab)
    first = _timed(lambda: generate(one, 1))
    whole = _timed(lambda: generate(one, args.tokens))
    result = {"tg": (args.tokens - 1) / (whole - first), "c": {}}
    for c in args.concurrency:
        batch = prompts(c, args.prompt_tokens, vocab)
        result["c"][c] = c * args.tokens / _timed(lambda b=batch: generate(b, args.tokens))
    return result


def _free() -> None:
    """The last run's model and caches out of the GPU's memory before the next one loads."""
    gc.collect()
    torch.cuda.empty_cache()


def run_model(name: str, path: str | None, args: argparse.Namespace) -> dict:
    ours, weight_bytes = run_mistralpy(path, args)
    _free()
    out = {"model": name, "gpu": torch.cuda.get_device_name(), "mistralpy": ours, "decode_weight_bytes": weight_bytes}
    if not args.no_transformers:
        peer = run_transformers(path, args)
        _free()
        out["transformers_eager"] = peer
        out["tg_vs_transformers"] = ours["tg"] / peer["tg"]
        out["c_vs_transformers"] = {c: ours["c"][c] / peer["c"][c] for c in args.concurrency}
    return out
