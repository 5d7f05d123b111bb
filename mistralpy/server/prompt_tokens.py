"""Prompts -> token ids in a worker thread, never on the event loop's thread nor the engine's: a long prompt or
conversation then delays only its own request. The engine is handed token ids (Tokenizer.encode releases the GIL,
so the worker runs alongside both loops; a chat template, plain Python, shares the GIL with them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..tokenizer import Tokenizer
from .protocol import TokenizeRequest


@dataclass(frozen=True)
class TokenizedPrompt:
    ids: list[int]
    text: str | None = None  # the prompt as sent, when it was text (echo returns it)


async def tokenize_prompts(tokenizer: Tokenizer, prompts: list[str | list[int]]) -> list[TokenizedPrompt]:
    """Text prompts tokenized (with the tokenizer's special tokens, as the engine would); id prompts as they are."""
    texts = [p for p in prompts if isinstance(p, str)]
    encoded = iter(await asyncio.to_thread(lambda: [tokenizer.encode(t) for t in texts]) if texts else ())
    return [TokenizedPrompt(next(encoded), p) if isinstance(p, str) else TokenizedPrompt(list(p)) for p in prompts]


async def chat_prompt_ids(tokenizer: Tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """The conversation rendered with the chat template (ending in the assistant's turn) and tokenized."""
    return await asyncio.to_thread(tokenizer.apply_chat_template, messages, add_generation_prompt=True, tokenize=True)


async def tokenize_request(tokenizer: Tokenizer, body: TokenizeRequest) -> tuple[list[int], list[str | None] | None]:
    """vLLM's /tokenize: the prompt, or the messages rendered with the chat template; and each id's token string
    when return_token_strs asks for them."""
    return await asyncio.to_thread(_tokenize, tokenizer, body)


def _tokenize(tokenizer: Tokenizer, body: TokenizeRequest) -> tuple[list[int], list[str | None] | None]:
    if body.messages is not None:
        messages = [m.to_template() for m in body.messages]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=body.add_generation_prompt)
        ids = tokenizer.encode(text, add_special_tokens=bool(body.add_special_tokens))
    else:
        add_special = body.add_special_tokens is None or body.add_special_tokens
        ids = tokenizer.encode(body.prompt, add_special_tokens=add_special)
    return ids, tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
