"""An image as a request gives it -> a decoded Pillow image, every bound checked before the work it guards: a data:
URL (base64), an http(s) URL (only where the caller allows fetching), a local path (Python and the CLI only), raw
bytes, or a PIL image. Anything Pillow cannot decode whole (not an image, truncated, 0x0) is an InvalidRequestError."""

from __future__ import annotations

import base64
import binascii
import io
import urllib.request
from pathlib import Path

from ..errors import InvalidRequestError, LimitExceededError
from .image_limits import ImageLimits

FETCH_TIMEOUT_S = 10.0


def load_image(source, limits: ImageLimits, allow_urls: bool = False, allow_paths: bool = False):
    """`source`: str (data: URL, http(s) URL, or path), bytes, pathlib.Path or PIL.Image.Image."""
    from PIL import Image

    if isinstance(source, Image.Image):
        limits.check_size(source.width, source.height, "the image")
        return source
    if isinstance(source, Path) or (isinstance(source, str) and not _is_url(source)):
        if not allow_paths:
            raise InvalidRequestError("an image must be a data: URL (base64) or an http(s) URL")
        return decode_image(_read_path(Path(source), limits), limits, str(source))
    if isinstance(source, (bytes, bytearray)):
        return decode_image(bytes(source), limits, "the image")
    if not isinstance(source, str):
        raise InvalidRequestError(f"an image must be a URL, a path, bytes or a PIL image, not {type(source).__name__}")
    if source.startswith("data:"):
        return decode_image(_data_url(source, limits), limits, "the data: URL's image")
    if not allow_urls:
        raise InvalidRequestError(
            "fetching images by http(s) URL is off on this server (serve --allow-image-urls turns it on); send the "
            "image as a data: URL (base64)"
        )
    return decode_image(_fetch(source, limits), limits, source)


def decode_image(data: bytes, limits: ImageLimits, what: str):
    from PIL import Image, UnidentifiedImageError

    limits.check_bytes(len(data), what)
    try:
        image = Image.open(io.BytesIO(data))
        limits.check_size(image.width, image.height, what)  # from the header, before the pixels are decoded
        image.load()
    except Image.DecompressionBombError:  # Pillow's own bound, met before ours where max_pixels is set above it
        raise LimitExceededError(
            f"{what} declares more pixels than an image may have (max_image_pixels {limits.max_pixels})",
            "max_image_pixels",
        ) from None
    except UnidentifiedImageError as e:
        raise InvalidRequestError(f"{what} is not an image Pillow can decode: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise InvalidRequestError(f"{what} cannot be decoded: {e}") from None
    return image


def _is_url(text: str) -> bool:
    return text.startswith(("data:", "http://", "https://"))


def _read_path(path: Path, limits: ImageLimits) -> bytes:
    try:
        size = path.stat().st_size
        limits.check_bytes(size, str(path))
        return path.read_bytes()
    except OSError as e:
        raise InvalidRequestError(f"cannot read image {path}: {e.strerror or e}") from None


def _data_url(url: str, limits: ImageLimits) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
        raise InvalidRequestError("an image data: URL must be data:image/<type>;base64,<data>")
    limits.check_bytes(len(payload) * 3 // 4, "the data: URL's image")  # before decoding it
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequestError(f"the image data: URL is not valid base64: {e}") from None


def _fetch(url: str, limits: ImageLimits) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 (http(s) checked above)
            data = response.read(limits.max_bytes + 1)
    except (OSError, ValueError) as e:
        raise InvalidRequestError(f"cannot fetch image {url}: {e}") from None
    return data
