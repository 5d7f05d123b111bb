"""ForwardedRequest: one HTTP request as the ingress hands it to an engine replica (Ray pickles it), with the key
the router keeps prefixes on: a hash of the beginning of the conversation or prompt the body carries."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

PREFIX_CHARS = 512  # the first characters of the prompt that pick its replica: the system prompt and the start


@dataclass
class ForwardedRequest:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    prefix_key: str | None  # None: no prompt in the body (GET routes, ...); the least loaded replica takes it


def prefix_key(body: bytes, model: str | None = None) -> str | None:
    """The hash of a request's model and its prompt's first PREFIX_CHARS characters, or None without a prompt."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    text = _prompt_text(doc)
    if not text:
        return None
    head = json.dumps([doc.get("model"), text[:PREFIX_CHARS]], ensure_ascii=False)
    return hashlib.sha256(head.encode()).hexdigest()[:32]


def _prompt_text(doc: dict[str, Any]) -> str:
    """Messages (chat, Anthropic's system), a prompt (completions) or an input (Responses, embeddings), as text."""
    parts: list[str] = []
    for key in ("system", "instructions"):
        if isinstance(doc.get(key), str):
            parts.append(doc[key])
    for message in doc.get("messages") or []:
        if isinstance(message, dict):
            parts.append(_content(message.get("content")))
    for key in ("prompt", "input"):
        value = doc.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list) and value:  # token ids are one prompt; a batch is keyed by its first prompt
            first = value if isinstance(value[0], int) else value[0]
            parts.append(first if isinstance(first, str) else json.dumps(first, ensure_ascii=False))
    return "\n".join(parts)


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
