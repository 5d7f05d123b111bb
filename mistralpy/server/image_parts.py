"""OpenAI's image content parts of chat messages: {"type": "image_url", "image_url": {"url": ..., "detail": ...}}.
The url is a data: URL (base64) or, where the server allows fetching (serve --allow-image-urls), an http(s) URL; the
image is decoded later, off the event loop (multimodal/image_source.py). In the chat template's messages the part is
{"type": "image"} (what Gemma 3's and other VLM templates read), in place."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from .protocol_base import OpenAIModel


class ImageURL(OpenAIModel):
    url: str
    detail: Literal["auto"] | None = None  # "low" / "high" would choose a resolution: no model here has a choice

    @field_validator("detail", mode="before")
    @classmethod
    def _detail(cls, value: Any) -> Any:
        if value in ("low", "high"):
            raise ValueError(f"detail {value!r} is not supported: this model sees every image at one resolution")
        return value


class ImagePart(OpenAIModel):
    type: Literal["image_url"]
    image_url: ImageURL


def template_content(parts: list) -> str | list[dict[str, Any]]:
    """A message's parts for the chat template: text joined by newlines where there is no image (as before images),
    else the parts in order as {"type": "text", "text": ...} and {"type": "image"}."""
    if not any(isinstance(p, ImagePart) for p in parts):
        return "\n".join(p.text for p in parts)
    return [{"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text} for p in parts]


def image_urls(messages: list) -> list[str]:
    """The urls of a conversation's image parts, in order (the order of the template's image placeholders)."""
    return [
        p.image_url.url for m in messages if isinstance(m.content, list) for p in m.content if isinstance(p, ImagePart)
    ]
