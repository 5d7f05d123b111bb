"""The serve flags for images: `--allow-image-urls` (image parts may name http(s) URLs, fetched by the server; off by
default: a client could otherwise make the server fetch any address it can reach) and the image limits."""

from __future__ import annotations

import argparse

from .image_limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_IMAGES, DEFAULT_MAX_PIXELS, ImageLimits


def add_image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-image-urls", action="store_true",
        help="fetch images that chat requests name by http(s) URL (default: data: URLs only)",
    )  # fmt: skip
    p.add_argument(
        "--max-image-bytes", type=int, default=DEFAULT_MAX_BYTES,
        help=f"largest encoded image; larger ones get 400 (default {DEFAULT_MAX_BYTES})",
    )  # fmt: skip
    p.add_argument(
        "--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help=f"most pixels (width x height) of an image; more get 400 (default {DEFAULT_MAX_PIXELS})",
    )  # fmt: skip
    p.add_argument(
        "--max-images-per-request", type=int, default=DEFAULT_MAX_IMAGES,
        help=f"most images in one request; more get 400 (default {DEFAULT_MAX_IMAGES})",
    )  # fmt: skip


def image_limits(args: argparse.Namespace) -> ImageLimits:
    return ImageLimits(args.max_image_bytes, args.max_image_pixels, args.max_images_per_request)
