"""`mistralpy bench --lora N`: its own workload (bench/lora.py); options of the other tests are refused."""

from __future__ import annotations

import argparse
import json

from ..cli_args import engine_options
from ..errors import InvalidRequestError
from .report import isa_line, run_meta
from .workloads import parse_int_list


def lora_command(args: argparse.Namespace) -> int:
    import torch

    from ..llm import LLM
    from ..loader.default_model import default_model_path
    from .lora import format_lora_table, run_lora_bench

    given = [flag for flag, value in (("-p/--n-prompt", args.n_prompt), ("--compare", args.compare or None),
             ("--structured", args.structured or None), ("--embed", args.embed)) if value is not None]  # fmt: skip
    if given:
        raise InvalidRequestError(f"{', '.join(given)} do not apply to --lora (mistralpy with and without adapters)")
    try:
        tokens, requests = max(parse_int_list(args.n_gen)), max(parse_int_list(args.concurrency))
    except ValueError as e:
        raise InvalidRequestError(str(e)) from None
    if args.lora < 1 or args.lora_rank < 1 or tokens < 1 or requests < 1 or args.repetitions < 1 or args.threads < 1:
        raise InvalidRequestError("nothing to run: give --lora, --lora-rank, -n, --concurrency, --repetitions and "
                                  "--threads >= 1")  # fmt: skip
    torch.set_num_threads(args.threads)
    model = args.model or default_model_path()
    options = dict(dtype=args.dtype, max_num_seqs=requests, num_threads=args.threads,
                   max_model_len=args.max_model_len or tokens + 64, **engine_options(args))  # fmt: skip
    base = LLM(model, **options)
    lora = LLM(model, enable_lora=True, max_loras=args.lora + 1, max_lora_rank=args.lora_rank, **options)
    result = run_lora_bench(base, lora, requests, args.lora, args.lora_rank, tokens, args.repetitions)
    meta = run_meta(args, model)
    if args.json:
        print(json.dumps({"meta": meta, "lora": result.to_dict()}, indent=2))
    else:
        print(f"{isa_line(meta)}\n{format_lora_table(result)}")
    return 0
