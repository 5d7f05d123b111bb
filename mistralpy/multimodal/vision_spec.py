"""VisionSpec: what the engine needs to know of a vision-language model to feed it images: the image size its tower
takes, the normalisation of its pixels, and the tokens that stand for an image in the prompt."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionSpec:
    image_size: int  # images are resized to image_size x image_size
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_token_id: int  # the placeholder each image embedding row replaces
    tokens_per_image: int
    start_token_id: int  # the token the chat template writes per image (Gemma 3: <start_of_image>)
    end_token_id: int

    def placeholder(self, newline_ids: list[int]) -> list[int]:
        """The tokens one image becomes, as Gemma 3's processor expands them: "\\n\\n", the start token, the image
        tokens, the end token, "\\n\\n"."""
        image = [self.start_token_id] + [self.image_token_id] * self.tokens_per_image + [self.end_token_id]
        return newline_ids + image + newline_ids
