"""The `mistralpy bench` subcommand: arguments, backends, output."""

from __future__ import annotations

import argparse
import os
import sys

from ..cli_args import add_model_args, engine_options
from ..errors import InvalidRequestError
from ..kernels.isa_level import ENV_VAR as ISA_ENV
from ..kernels.isa_level import LEVELS
from .report import isa_line, run_meta
from .torch_isa import hold_torch_to
from .workloads import build_tests, parse_int_list

PEERS = ("llama-cpp", "transformers", "no-spec")  # no-spec: mistralpy itself without its --speculative-* flags


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure prompt-processing and generation throughput (like llama-bench)",
        description="Throughput of prompt processing (ppN), generation (tgN) and N concurrent requests (cN), "
        "optionally side by side with peers on the same model file in this same run.",
    )
    add_model_args(p)
    p.add_argument("-p", "--n-prompt", default=None, help="prompt lengths for pp tests (default 128,512)")
    p.add_argument("-n", "--n-gen", default="128", help="generated tokens for tg tests (default 128)")
    p.add_argument("--concurrency", default="1,8,32", help="concurrent requests for cN tests (default 1,8,32)")
    p.add_argument("--concurrent-prompt", type=int, default=None, help="prompt tokens of each cN request (default 64)")
    p.add_argument("-r", "--repetitions", type=int, default=3, help="timed runs per test (default 3)")
    p.add_argument("-t", "--threads", type=int, default=os.cpu_count(), help="CPU threads, fixed (default: all)")
    p.add_argument("--compare", default="", help=f"comma-separated peers to run too: {', '.join(PEERS)}")
    p.add_argument(
        "--structured", action="store_true",
        help="instead of the pp/tg/cN tests: JSON-schema constrained decoding against the same prompts unconstrained, "
        "at each --concurrency, up to -n tokens a request (decode tokens/s of each, and their ratio)",
    )  # fmt: skip
    p.add_argument(
        "--embed", type=int, nargs="?", const=256, default=None, metavar="TEXTS",
        help="instead of the pp/tg/cN tests: embedding texts/s on TEXTS mixed texts (default 256) against "
        "sentence-transformers in the same run (-m: a sentence-transformers folder; default all-MiniLM-L6-v2)",
    )  # fmt: skip
    p.add_argument(
        "--lora", type=int, default=None, metavar="N",
        help="instead of the pp/tg/cN tests: requests (--concurrency's largest, -n tokens each) spread over N LoRA "
        "adapters of rank --lora-rank on every projection, against the base model in the same run",
    )  # fmt: skip
    p.add_argument("--lora-rank", type=int, default=16, help="with --lora: the adapters' rank (default 16)")
    p.add_argument(
        "--llama-bench", default=None, metavar="PATH",
        help="with --compare llama-cpp: time that llama-bench binary (e.g. benchmarks/build_llama_cpp_avx2.sh's) "
        "instead of llama-cpp-python",
    )  # fmt: skip
    p.add_argument(
        "--peer-dtype", choices=["bfloat16", "float32"], default=None,
        help="transformers' dtype (default: float32 if --dtype is float32, else bfloat16)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--isa", choices=["auto", *LEVELS], default=None,
        help="the native kernels' ISA level (default: MISTRALPY_ISA, else the best this CPU runs); avx2 and "
        "portable also hold torch's own kernels to that level (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, "
        "MKL_ENABLE_INSTRUCTIONS)",
    )  # fmt: skip


def bench_command(args: argparse.Namespace) -> int:
    import torch

    from ..loader.default_model import default_model_path
    from .backends import LlamaCppBackend, MistralpyBackend, TransformersBackend
    from .llama_bench import LlamaBenchBackend
    from .runner import format_table, run_benchmarks, to_json

    hold_torch_to(args.isa)  # re-executes where torch must be held to a lower level
    if args.structured:
        return structured_command(args)
    if args.embed is not None:
        return embed_command(args)
    if args.lora is not None:
        from .lora_command import lora_command

        return lora_command(args)
    try:
        tests = build_tests(
            parse_int_list(args.n_prompt or "128,512"), parse_int_list(args.n_gen), parse_int_list(args.concurrency),
            64 if args.concurrent_prompt is None else args.concurrent_prompt,
        )  # fmt: skip
    except ValueError as e:
        raise InvalidRequestError(str(e)) from None
    peers = [p.strip() for p in args.compare.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown or not tests or args.repetitions < 1 or args.threads < 1:
        raise InvalidRequestError(
            f"unknown peer {unknown[0]!r} (choose from {', '.join(PEERS)})" if unknown
            else "nothing to run: give -p/-n/--concurrency values, --repetitions >= 1, --threads >= 1"
        )  # fmt: skip
    if "no-spec" in peers and engine_options(args)["speculative_config"] is None:
        raise InvalidRequestError("--compare no-spec is mistralpy without speculation: give --speculative-* flags")
    if args.llama_bench is not None and "llama-cpp" not in peers:
        raise InvalidRequestError("--llama-bench names the llama-cpp peer's binary: give --compare llama-cpp too")
    if args.isa is not None:
        os.environ[ISA_ENV] = args.isa  # before the engine loads (or builds) its kernels
    torch.set_num_threads(args.threads)
    model = args.model or default_model_path()
    max_len = args.max_model_len or max(t.prompt_tokens + t.gen_tokens for t in tests) + 16
    # a fixed count, as the peers get: the adaptive default is measured by benchmarks/contention.py
    options = dict(max_num_seqs=max(t.concurrency for t in tests), num_threads=args.threads, **engine_options(args))
    llama_bench = LlamaBenchBackend(args.llama_bench, model, args.threads) if args.llama_bench else None
    backends = [MistralpyBackend(model, args.dtype, max_len, **options)]
    if "llama-cpp" in peers:
        backends.append(llama_bench or LlamaCppBackend(model, args.threads, max_len))
    if "transformers" in peers:
        backends.append(TransformersBackend(model, args.peer_dtype or args.dtype))
    if "no-spec" in peers:
        backends.append(MistralpyBackend(model, args.dtype, max_len, **{**options, "speculative_config": None}))
        backends[-1].name = "mistralpy no-spec"
    results = run_benchmarks(backends, tests, args.repetitions, progress=not args.json and sys.stderr.isatty())
    meta = run_meta(args, model)
    speculator = backends[0].llm.engine.speculator
    if speculator is not None:
        meta["spec_decode"] = spec_decode_report(speculator.stats)
    print(to_json(results, meta) if args.json else f"{isa_line(meta)}\n{format_table(results)}{_spec_line(meta)}")
    return 0


def spec_decode_report(stats) -> dict:
    """Speculation over the whole bench run (every test and repetition): the counts, acceptance rate and mean
    accepted length (tokens a verify step produced)."""
    return {
        "draft_tokens": stats.num_draft_tokens, "accepted_tokens": stats.num_accepted_tokens,
        "emitted_tokens": stats.num_emitted_tokens, "acceptance_rate": round(stats.acceptance_rate, 4),
        "mean_accepted_length": round(stats.mean_accepted_length, 3),
    }  # fmt: skip


def _spec_line(meta: dict) -> str:
    spec = meta.get("spec_decode")
    if spec is None:
        return ""
    return (
        f"\nspeculative decoding: {spec['draft_tokens']} draft tokens proposed, {spec['accepted_tokens']} accepted "
        f"(rate {spec['acceptance_rate']:.3f}), {spec['emitted_tokens']} emitted by verify steps, mean accepted "
        f"length {spec['mean_accepted_length']:.2f}"
    )


def structured_command(args: argparse.Namespace) -> int:
    """`--structured`: its own workload (text prompts, a JSON schema), so the pp/cN prompt options and peers are
    refused rather than ignored."""
    import json

    import torch

    from ..loader.default_model import default_model_path
    from .backends import MistralpyBackend
    from .structured import format_structured_table, run_structured

    given = [flag for flag, value in (("-p/--n-prompt", args.n_prompt), ("--concurrent-prompt",
             args.concurrent_prompt), ("--compare", args.compare or None), ("--llama-bench", args.llama_bench),
             ("--peer-dtype", args.peer_dtype)) if value is not None]  # fmt: skip
    if given:
        raise InvalidRequestError(f"{', '.join(given)} do not apply to --structured (text prompts, mistralpy only)")
    try:
        gens, concurrency = parse_int_list(args.n_gen), [c for c in parse_int_list(args.concurrency) if c >= 1]
    except ValueError as e:
        raise InvalidRequestError(str(e)) from None
    if not gens or max(gens) < 1 or not concurrency or args.repetitions < 1 or args.threads < 1:
        raise InvalidRequestError("nothing to run: give -n and --concurrency values >= 1, --repetitions >= 1, "
                                  "--threads >= 1")  # fmt: skip
    torch.set_num_threads(args.threads)
    model = args.model or default_model_path()
    max_len = args.max_model_len or max(gens) + 128  # the prompts are about 30 tokens
    options = dict(max_num_seqs=max(concurrency), num_threads=args.threads, **engine_options(args))
    backend = MistralpyBackend(model, args.dtype, max_len, **options)
    results = run_structured(backend.llm.engine, concurrency, max(gens), args.repetitions)
    if args.json:
        report = {"meta": run_meta(args, model), "structured": [r.to_dict() for r in results]}
        print(json.dumps(report, indent=2))
    else:
        print(f"{isa_line(run_meta(args, model))}\n{format_structured_table(results)}")
    return 0


def embed_command(args: argparse.Namespace) -> int:
    """`--embed`: its own workload (texts) and peer (sentence-transformers): the other tests' options are refused."""
    import json

    import torch

    from ..embed.default_model import default_embedding_model_path
    from ..llm import LLM
    from .embed import format_embed_table, mixed_texts, run_embed

    given = [flag for flag, value in (("-p/--n-prompt", args.n_prompt), ("--concurrent-prompt",
             args.concurrent_prompt), ("--compare", args.compare or None), ("--structured", args.structured or None))
             if value is not None]  # fmt: skip
    if given:
        raise InvalidRequestError(f"{', '.join(given)} do not apply to --embed (texts, against sentence-transformers)")
    if args.embed < 1 or args.repetitions < 1 or args.threads < 1:
        raise InvalidRequestError("nothing to run: give --embed >= 1, --repetitions >= 1, --threads >= 1")
    torch.set_num_threads(args.threads)
    model = args.model or default_embedding_model_path()
    llm = LLM(model, args.dtype, task="embed", num_threads=args.threads, max_model_len=args.max_model_len,
              **engine_options(args))  # fmt: skip
    result = run_embed(llm, model, mixed_texts(args.embed), args.repetitions)
    meta = {**run_meta(args, model), "dtype": str(llm.engine.dtype).removeprefix("torch.")}
    if args.json:
        print(json.dumps({"meta": meta, "embed": result.to_dict()}, indent=2))
    else:
        print(f"{isa_line(meta)}\n{format_embed_table(result, meta['dtype'])}")
    return 0
