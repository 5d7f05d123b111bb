"""Prompts -> token ids in a worker thread, never on the event loop's thread nor the engine's: a long prompt or
conversation then delays only its own request. The engine is handed token ids (Tokenizer.encode releases the GIL,
so the worker runs alongside both loops; a chat template, plain Python, shares the GIL with them).

Large inputs go to a thread of their own, one at a time, and the heap is trimmed after each: Hugging Face tokenizers
take ~160 bytes of transient memory per character (measured with the embedded model's tokenizer: a 1 MB prompt
takes a process from 356 to 518 MiB while it is tokenized), which glibc keeps in the worker's arena afterwards: six
1 MB prompts at once left it at 671 MiB for good, and a server soaked with a few of them grew 40%. One at a time
with a trim after each, the resident memory returns to where it was, and the peak is one large input's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..heap import trim_heap
from ..tokenizer import Tokenizer
from .protocol import TokenizeRequest

T = TypeVar("T")
LARGE_INPUT_CHARS = 64 * 1024  # ~10 MB of transient memory: past this, one at a time and trimmed after
# Process-wide, as the heap it protects: its one thread starts on the first large input.
_LARGE_INPUTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mistralpy-large-input")


@dataclass(frozen=True)
class TokenizedPrompt:
    ids: list[int]
    text: str | None = None  # the prompt as sent, when it was text (echo returns it)
    images: list | None = None  # its images, decoded and preprocessed (multimodal.request_images.ImageInput)


async def tokenize_prompts(tokenizer: Tokenizer, prompts: list[str | list[int]]) -> list[TokenizedPrompt]:
    """Text prompts tokenized (with the tokenizer's special tokens, as the engine would); id prompts as they are."""
    texts = [p for p in prompts if isinstance(p, str)]
    size = sum(map(len, texts))
    encoded = iter(await off_loop(size, lambda: [tokenizer.encode(t) for t in texts]) if texts else ())
    return [TokenizedPrompt(next(encoded), p) if isinstance(p, str) else TokenizedPrompt(list(p)) for p in prompts]


async def chat_prompt_ids(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    render: Callable[[Tokenizer, list[dict[str, Any]]], list[int]] | None = None,
) -> list[int]:
    """The conversation rendered with the chat template (ending in the assistant's turn) and tokenized; `render`
    (a request's ToolUse.render) lays out its tools, calls and results."""
    size = sum(len(str(m.get("content", ""))) + len(str(m.get("tool_calls") or "")) for m in messages)
    if render is None:
        return await off_loop(
            size, lambda: tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        )
    return await off_loop(size, lambda: render(tokenizer, messages))


async def tokenize_request(tokenizer: Tokenizer, body: TokenizeRequest) -> tuple[list[int], list[str | None] | None]:
    """vLLM's /tokenize: the prompt, or the messages rendered with the chat template; and each id's token string
    when return_token_strs asks for them."""
    messages = body.messages or ()
    size = len(body.prompt or body.content or "") + sum(len(str(m.to_template()["content"])) for m in messages)
    return await off_loop(size, lambda: _tokenize(tokenizer, body))


async def llama_cpp_tokens(tokenizer: Tokenizer, ids: list[int], with_pieces: bool) -> list:
    """llama.cpp's /tokenize answer: the ids, or with_pieces [{"id", "piece"}] with each token's own text."""
    if not with_pieces:
        return ids
    pieces = await off_loop(len(ids), lambda: [tokenizer.decode([i], skip_special_tokens=False) for i in ids])
    return [{"id": i, "piece": piece} for i, piece in zip(ids, pieces, strict=True)]


async def off_loop(size: int, work: Callable[[], T]) -> T:
    """`work` (tokenizing about `size` characters) in a worker thread; a large one in the large inputs' thread."""
    if size < LARGE_INPUT_CHARS:
        return await asyncio.to_thread(work)
    return await asyncio.get_running_loop().run_in_executor(_LARGE_INPUTS, _trimmed, work)


def _trimmed(work: Callable[[], T]) -> T:
    try:
        return work()
    finally:
        trim_heap()


def _tokenize(tokenizer: Tokenizer, body: TokenizeRequest) -> tuple[list[int], list[str | None] | None]:
    if body.messages is not None:
        messages = [m.to_template() for m in body.messages]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=body.add_generation_prompt)
        ids = tokenizer.encode(text, add_special_tokens=bool(body.add_special_tokens))
    else:
        add_special = body.add_special_tokens is None or body.add_special_tokens
        ids = tokenizer.encode(body.prompt, add_special_tokens=add_special)
    return ids, tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
