"""Image parts of chat messages given in Python (LLM.chat, `mistralpy run --image`): OpenAI's
{"type": "image_url", "image_url": {"url": ...}} (a data: URL, an http(s) URL, or a local path), and
{"type": "image", "image": ...} or vLLM's {"type": "image_pil", "image_pil": ...} holding a PIL image, bytes or a
path. Each becomes {"type": "image"} in the template's messages; the sources are returned in order."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError

_SOURCE_KEYS = {"image": "image", "image_pil": "image_pil"}


def split_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list]:
    """(the messages as the chat template takes them, their images' sources in order)."""
    out, sources = [], []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not any(_is_image(p) for p in content):
            out.append(message)
            continue
        parts = []
        for part in content:
            if _is_image(part):
                sources.append(_source(part))
                parts.append({"type": "image"})
            else:
                parts.append(part)
        out.append({**message, "content": parts})
    return out, sources


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in ("image_url", *_SOURCE_KEYS)


def _source(part: dict[str, Any]) -> Any:
    kind = part["type"]
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str):
            raise InvalidRequestError('an image_url part needs {"image_url": {"url": "..."}}')
        return url
    if _SOURCE_KEYS[kind] not in part:
        raise InvalidRequestError(f"an {kind!r} part needs its image under the key {_SOURCE_KEYS[kind]!r}")
    return part[_SOURCE_KEYS[kind]]
