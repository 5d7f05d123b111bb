"""`mistralpy run` (one-shot or interactive chat). Errors are one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mistralpy", description="Fast LLM inference in Python on PyTorch.")
    parser.add_argument("--version", action="version", version=f"mistralpy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="generate text: one-shot with --prompt, else an interactive chat",
        description="Generate from a prompt, or chat interactively (/reset, /exit, Ctrl-D).",
    )
    add_model_args(run)
    add_chat_template_arg(run)
    run.add_argument("-p", "--prompt", help="one-shot: generate a reply to this prompt and exit")
    run.add_argument("--raw", action="store_true", help="with --prompt: complete the text as-is, no chat template")
    run.add_argument("--system", help="system message for the chat")
    add_sampling_args(run)
    add_serve_parser(sub)
    from .bench.command import add_bench_parser

    add_bench_parser(sub, add_model_args)
    return parser


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-m",
        "--model",
        default=None,
        help="GGUF file, legacy GGML file or Hugging Face model folder (default: the embedded SmolLM2-135M Q4_1)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="compute dtype (default: auto, the fastest on this CPU)",
    )
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    p.add_argument(
        "--kv-cache-dtype", default=None, choices=["auto", "int8"],
        help="KV cache rows: auto (the compute dtype) or int8 (codes and a scale a row: about half the memory); "
        "default: int8 for quantized weights computed in bf16, else auto",
    )  # fmt: skip
    p.add_argument(
        "--kv-cache-tokens", type=int, default=16384,
        help="tokens the KV pool holds, at least the context length (default 16384); its pages are taken as used",
    )  # fmt: skip
    p.add_argument(
        "--isq", default=None, choices=["q4_0", "q4_1", "q8_0", "q4_k"],
        help="in-situ quantization of a full-precision model's weights at load",
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
        "kv_cache_dtype": args.kv_cache_dtype,
        "kv_cache_tokens": args.kv_cache_tokens,
        "chat_template": read_chat_template(template) if template is not None else None,
        **ggml_options(args),
    }


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import MistralpyError

    try:
        if args.command == "bench":
            from .bench.command import bench_command

            return bench_command(args)
        return serve_command(args) if args.command == "serve" else run_command(args)
    except MistralpyError as e:
        print(f"mistralpy: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def run_command(args: argparse.Namespace) -> int:
    from .errors import InvalidRequestError
    from .llm import LLM
    from .sampling_params import SamplingParams

    if args.raw and args.prompt is not None and (args.chat_template is not None or args.system is not None):
        raise InvalidRequestError("--raw completes the prompt as-is: it takes no --chat-template or --system")
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        max_tokens=args.max_tokens,
    )
    llm = LLM(
        args.model, dtype=args.dtype, max_model_len=args.max_model_len, show_progress=True, **engine_options(args)
    )
    if args.prompt is not None:
        if args.raw:
            prompt = llm.get_tokenizer().encode(args.prompt)
        else:
            prompt = _chat_prompt(llm, _system(args) + [{"role": "user", "content": args.prompt}])
        for piece in stream(llm, prompt, params):
            print(piece, end="", flush=True)
        print()
        return 0
    return repl(llm, params, _system(args))


def _system(args: argparse.Namespace) -> list[dict[str, str]]:
    return [{"role": "system", "content": args.system}] if args.system else []


def _chat_prompt(llm, messages: list[dict[str, str]]) -> list[int]:
    return llm.get_tokenizer().apply_chat_template(messages, add_generation_prompt=True, tokenize=True)


def stream(llm, prompt: list[int], params) -> Iterator[str]:
    """Yield text pieces as the engine produces them; the request is aborted if the consumer stops early."""
    engine = llm.engine
    request_id = engine.add_request(prompt, params)
    try:
        while True:
            for out in engine.step(delta=True):
                if out.request_id == request_id:
                    if out.outputs[0].text:
                        yield out.outputs[0].text
                    if out.finished:
                        return
    finally:
        engine.abort_request(request_id)


def repl(llm, params, system: list[dict[str, str]]) -> int:
    from .errors import MistralpyError

    print("mistralpy chat: type a message; /reset clears the conversation, /exit or Ctrl-D quits.", flush=True)
    messages = list(system)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            messages = list(system)
            print("(conversation cleared)", flush=True)
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        try:
            for piece in stream(llm, _chat_prompt(llm, messages), params):
                reply.append(piece)
                print(piece, end="", flush=True)
        except MistralpyError as e:
            messages.pop()
            print(f"mistralpy: error: {e} (use /reset to start over)", file=sys.stderr, flush=True)
            continue
        except KeyboardInterrupt:
            print("\n(interrupted)", flush=True)
        print(flush=True)
        messages.append({"role": "assistant", "content": "".join(reply)})


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from .server.serve import add_serve_args

    serve = sub.add_parser(
        "serve",
        help="run the OpenAI-compatible HTTP server",
        description="Serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, ...).",
    )
    add_model_args(serve)
    add_chat_template_arg(serve)
    add_serve_args(serve)


def serve_command(args: argparse.Namespace) -> int:
    from .server.serve import serve_command as run_server

    return run_server(args)
