"""A chat request's images, decoded and preprocessed in a worker thread (Pillow's decoding would hold the event loop),
and the text expansion of their placeholders for the prompt's rendering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..multimodal.prompt_images import PromptImages


async def chat_images(
    images: PromptImages, urls: list[str], allow_urls: bool
) -> tuple[list | None, Callable[[str], str] | None]:
    """(the images, the rendered text's expansion) of a request; (None, None) without images. A text-only model, a
    bad or oversized image, too many images or a URL the server does not fetch: InvalidRequestError (400)."""
    if not urls:
        return None, None
    inputs = await asyncio.to_thread(images.prepare, urls, allow_urls)
    return inputs, images.expand_text
