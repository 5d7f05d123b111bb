"""ImageLimits: what one request may send of images, each bound a clear 400 rather than a stalled or killed server:
encoded bytes (decoding cost and memory), pixels (a small file can declare a huge canvas: a decompression bomb),
images per request (each costs an encoder pass and its tokens)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidRequestError, LimitExceededError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # OpenAI's limit per image
DEFAULT_MAX_PIXELS = 50_000_000  # beyond any camera's picture; decoded RGB ~150 MB
DEFAULT_MAX_IMAGES = 8


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = DEFAULT_MAX_IMAGES

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"image limit {name} must be a positive integer, not {value!r}")

    def check_count(self, count: int) -> None:
        if count > self.max_images:
            raise LimitExceededError(
                f"a request may hold at most {self.max_images} images; this one has {count}", "max_images"
            )

    def check_bytes(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise LimitExceededError(
                f"{what} is {size} bytes; an image may be at most {self.max_bytes} bytes", "max_image_bytes"
            )

    def check_size(self, width: int, height: int, what: str) -> None:
        if width < 1 or height < 1:
            raise InvalidRequestError(f"{what} is {width}x{height} pixels: an image must have at least one pixel")
        if width * height > self.max_pixels:
            raise LimitExceededError(
                f"{what} is {width}x{height} pixels; an image may have at most {self.max_pixels} pixels",
                "max_image_pixels",
            )
