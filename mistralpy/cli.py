"""`mistralpy run` (one-shot or interactive chat). Errors are one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from . import __version__
from .cli_args import add_chat_template_arg, add_model_args, add_sampling_args, engine_options
from .lora.cli import add_lora_merge_arg, lora_merge_option


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
    add_lora_merge_arg(run)
    run.add_argument(
        "--image", action="append", default=[], metavar="PATH",
        help="an image for a vision-language model, shown with the (first) message (repeatable)",
    )  # fmt: skip
    add_sampling_args(run)
    add_serve_parser(sub)
    from .server.ui.launch import add_ui_parser

    add_ui_parser(sub)
    from .bench.command import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import MistralpyError

    try:
        if args.command == "bench":
            from .bench.command import bench_command

            return bench_command(args)
        if args.command == "ui":
            from .server.ui.launch import ui_command

            return ui_command(args)
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
    if args.raw and args.image:
        raise InvalidRequestError("--raw completes the prompt as-is: it takes no --image (images go in a chat)")
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
        args.model, dtype=args.dtype, max_model_len=args.max_model_len, show_progress=True,
        lora_merge=lora_merge_option(args), **engine_options(args),
    )  # fmt: skip
    if args.prompt is not None:
        if args.raw:
            prompt, images = llm.get_tokenizer().encode(args.prompt), None
        else:
            prompt, images = _chat_prompt(llm, _system(args) + [_user(args.prompt, args.image)])
        for piece in stream(llm, prompt, params, images):
            print(piece, end="", flush=True)
        print()
        return 0
    return repl(llm, params, _system(args), args.image)


def _system(args: argparse.Namespace) -> list[dict[str, str]]:
    return [{"role": "system", "content": args.system}] if args.system else []


def _user(text: str, images: list[str]) -> dict:
    """A user message; with images, their parts (paths) before the text."""
    if not images:
        return {"role": "user", "content": text}
    return {
        "role": "user",
        "content": [*({"type": "image", "image": p} for p in images), {"type": "text", "text": text}],
    }


def _chat_prompt(llm, messages: list[dict]) -> tuple[list[int], list | None]:
    """The prompt's ids and its images (their placeholders expanded in the text, as the server does)."""
    from .multimodal.chat_parts import split_images

    messages, images = split_images(messages)
    tokenizer = llm.get_tokenizer()
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = llm.engine.images.expand_text(text) if images else text
    return tokenizer.encode(text, add_special_tokens=False), images or None


def _chat_turn(llm, messages: list[dict], params) -> tuple:
    prompt, images = _chat_prompt(llm, messages)
    return prompt, params, images


def stream(llm, prompt: list[int], params, images: list | None = None) -> Iterator[str]:
    """Yield text pieces as the engine produces them; the request is aborted if the consumer stops early."""
    engine = llm.engine
    request_id = engine.add_request(prompt, params, images=images)
    try:
        while True:
            for out in engine.step(delta=True):
                if out.request_id == request_id:
                    yield from (c.text for c in out.outputs if c.text)
                    if out.finished:
                        return
    finally:
        engine.abort_request(request_id)


def repl(llm, params, system: list[dict[str, str]], images: list[str] = ()) -> int:
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
        first = not any(m["role"] == "user" for m in messages)
        messages.append(_user(line, list(images) if first else []))
        reply = []
        try:
            for piece in stream(llm, *_chat_turn(llm, messages, params)):
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
    add_model_args(serve, several=True)
    add_chat_template_arg(serve)
    add_serve_args(serve)


def serve_command(args: argparse.Namespace) -> int:
    from .server.serve import serve_command as run_server

    return run_server(args)
