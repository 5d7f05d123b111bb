"""PromptImages: a request's images joined to its prompt. Each image is decoded (within the limits), preprocessed
and hashed; the prompt holds one start token per image (what the chat template writes for an image part), which
becomes the image's placeholder: "\\n\\n", the start token, tokens_per_image image tokens, the end token, "\\n\\n" (as
Gemma 3's processor expands it). A prompt already expanded (the chat path expands the text, as the processor does)
is taken as it is, its runs of image tokens checked."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidRequestError
from .image_limits import ImageLimits
from .image_source import load_image
from .preprocess import image_hash, pixel_values
from .request_images import ImageInput, RequestImages
from .vision_spec import VisionSpec


class PromptImages:
    def __init__(self, spec: VisionSpec | None, tokenizer, max_chunk: int, limits: ImageLimits | None = None) -> None:
        self.spec, self.tokenizer, self.limits = spec, tokenizer, limits or ImageLimits()
        self.newline_ids = tokenizer.encode("\n\n", add_special_tokens=False) if spec is not None else []
        self.max_chunk = max_chunk  # the step's token budget: an image's tokens go in one chunk

    @classmethod
    def for_model(cls, model, tokenizer, max_chunk: int, limits: ImageLimits | None = None) -> PromptImages:
        return cls(getattr(model, "vision", None), tokenizer, max_chunk, limits)

    def prepare(self, sources: Sequence, allow_urls: bool = False, allow_paths: bool = False) -> list[ImageInput]:
        """Images as requests give them (image_source.load_image) -> pixels and hashes. Slow: callers run it off
        the engine's thread where they can."""
        spec = self._spec()
        self.limits.check_count(len(sources))
        inputs = []
        for source in sources:
            if isinstance(source, ImageInput):
                inputs.append(source)
                continue
            pixels = pixel_values(load_image(source, self.limits, allow_urls, allow_paths), spec)
            inputs.append(ImageInput(pixels, image_hash(pixels)))
        return inputs

    def attach(self, ids: list[int], images: Sequence | None) -> tuple[list[int], RequestImages | None]:
        """The prompt with its images' placeholders, and the RequestImages; a prompt without images unchanged (but
        refused if it holds image tokens: they would have no embeddings)."""
        spec = self.spec
        if not images:
            if spec is not None and spec.image_token_id in ids:
                raise InvalidRequestError("the prompt holds image tokens but the request has no images")
            return ids, None
        inputs = self.prepare(images, allow_paths=True)
        if spec.tokens_per_image > self.max_chunk:
            raise InvalidRequestError(
                f"an image takes {spec.tokens_per_image} tokens, more than max_num_batched_tokens ({self.max_chunk}): "
                "an image's tokens must fit in one step"
            )
        if spec.image_token_id in ids:
            ids, ranges = ids, self._expanded_ranges(ids, len(inputs))
        else:
            ids, ranges = self._expand(ids, len(inputs))
        return ids, RequestImages(inputs, ranges)

    def expand_text(self, text: str) -> str:
        """A rendered chat prompt with each start token's text replaced by the whole placeholder's (the processor's
        `full_image_sequence`), so that it is tokenized as transformers' processor tokenizes it."""
        spec = self._spec()
        start, image, end = self.tokenizer.convert_ids_to_tokens(
            [spec.start_token_id, spec.image_token_id, spec.end_token_id]
        )
        if None in (start, image, end):
            raise InvalidRequestError("the tokenizer lacks the model's image tokens")
        return text.replace(start, f"\n\n{start}{image * spec.tokens_per_image}{end}\n\n")

    def spec_or_error(self) -> VisionSpec:
        """The model's VisionSpec; InvalidRequestError where it takes no images."""
        return self._spec()

    def _spec(self) -> VisionSpec:
        if self.spec is None:
            raise InvalidRequestError("this model does not take images (it is a text-only model)")
        return self.spec

    def _expand(self, ids: list[int], count: int) -> tuple[list[int], list[tuple[int, int]]]:
        spec = self.spec
        starts = [i for i, t in enumerate(ids) if t == spec.start_token_id]
        self._check_count(len(starts), count)
        out, ranges, prev = [], [], 0
        placeholder = spec.placeholder(self.newline_ids)
        first = len(self.newline_ids) + 1  # the first image token's place in the placeholder
        for pos in starts:
            out += ids[prev:pos]
            ranges.append((len(out) + first, len(out) + first + spec.tokens_per_image))
            out += placeholder
            prev = pos + 1
        return out + ids[prev:], ranges

    def _expanded_ranges(self, ids: list[int], count: int) -> list[tuple[int, int]]:
        spec, ranges, i = self.spec, [], 0
        while i < len(ids):
            if ids[i] != spec.image_token_id:
                i += 1
                continue
            j = i
            while j < len(ids) and ids[j] == spec.image_token_id:
                j += 1
            if (
                j - i != spec.tokens_per_image
                or ids[i - 1 : i] != [spec.start_token_id]
                or ids[j : j + 1] != [spec.end_token_id]
            ):
                raise InvalidRequestError(
                    f"the prompt's image tokens must come in runs of {spec.tokens_per_image} between the start and "
                    "end tokens"
                )
            ranges.append((i, j))
            i = j
        self._check_count(len(ranges), count)
        return ranges

    @staticmethod
    def _check_count(found: int, count: int) -> None:
        if found != count:
            raise InvalidRequestError(
                f"the prompt has {found} image placeholders (the chat template writes one per image part) but the "
                f"request has {count} images"
            )
