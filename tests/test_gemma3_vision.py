"""Gemma 3's vision-language model against transformers (fp32): prompts with one and with two images, prefilled
whole and in chunks (an image's tokens always within one chunk), then decoded; the image preprocessing against
transformers' Gemma 3 image processor; the model loaded from the HF folder as transformers 5 saves it and with the
Hub's names."""

from __future__ import annotations

import io
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mistralpy.engine.model_runner import ModelRunner
from mistralpy.layers.attention import AttentionMetadata, PrefillSpan
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model
from mistralpy.multimodal.preprocess import image_hash, pixel_values
from mistralpy.multimodal.request_images import ImageInput, RequestImages
from mistralpy.multimodal.step_encoder import StepEncoder

from . import vision_model as vm

BLOCK = 4
ATOL = 1e-4


@pytest.fixture(scope="module")
def vlm(tmp_path_factory, tokenizer_dir):
    folder = tmp_path_factory.mktemp("gemma3_vlm")
    return folder, vm.build_vlm(folder, tokenizer_dir)


def prompt_with_images(model, num_images: int) -> tuple[list[int], RequestImages]:
    """Text, then each image's placeholder followed by more text; the images' pixels as transformers makes them."""
    spec = model.vision
    gen = torch.Generator().manual_seed(num_images)
    ids, ranges = torch.randint(3, 49000, (5,), generator=gen).tolist(), []
    for _ in range(num_images):
        start = len(ids) + 3  # "\n\n" as two tokens, then the start token
        ids += spec.placeholder([198, 198]) + torch.randint(3, 49000, (7,), generator=gen).tolist()
        ranges.append((start, start + spec.tokens_per_image))
    pixels = vm.reference_pixels([vm.png_bytes(i) for i in range(num_images)])
    images = [ImageInput(p, image_hash(p)) for p in pixels]
    return ids, RequestImages(images, ranges)


def run_chunks(
    model, ids: list[int], images: RequestImages, splits: list[int], steps: list[int], two_way: bool = True
) -> torch.Tensor:
    """Our logits: the prompt prefilled in chunks ending at `splits`, then one decode step per token of `steps`;
    `two_way=False`: without the image tokens' two-way attention."""
    runner = ModelRunner(model, num_blocks=64, block_size=BLOCK, dtype=torch.float32)
    encoder, rows, start = StepEncoder(model), [], 0
    tokens = ids + steps
    with torch.inference_mode():
        for end in [*splits, len(ids), *range(len(ids) + 1, len(tokens) + 1)]:
            n, step_images = end - start, encoder.step_images([(images, start, end - start)])
            table = torch.arange(-(-end // BLOCK))
            if n == 1:
                meta = AttentionMetadata(torch.tensor([start]), 1, table.unsqueeze(0), torch.tensor([end]))
            else:
                span = PrefillSpan(n, end, table, images.bidirectional(start, end) if two_way else ())
                meta = AttentionMetadata(torch.arange(start, end), 0, prefills=[span])
            kwargs = {} if step_images is None else {"images": step_images}
            hidden = model(torch.tensor(tokens[start:end]), torch.arange(start, end), runner.kv_caches, meta, **kwargs)
            rows.append(model.compute_logits(hidden))
            start = end
    return torch.cat(rows)


def test_preprocessing_matches_transformers(vlm):
    from PIL import Image

    model = load_model(open_model_source(vlm[0]), torch.float32)
    images = [vm.png_bytes(7), vm.png_bytes(8, size=(100, 20)), vm.png_bytes(9, size=(32, 32))]
    ours = torch.stack([pixel_values(Image.open(io.BytesIO(b)), model.vision) for b in images])
    torch.testing.assert_close(ours, vm.reference_pixels(images), atol=0, rtol=0)


@pytest.mark.parametrize("num_images", [1, 2])
def test_logits_match_transformers(vlm, num_images):
    folder, reference = vlm
    model = load_model(open_model_source(folder), torch.float32)
    ids, images = prompt_with_images(model, num_images)
    steps = [11, 12, 13]
    pixels = torch.stack([image.pixels for image in images.images])
    ref = vm.reference_logits(reference, ids + steps, pixels)
    torch.testing.assert_close(run_chunks(model, ids, images, [], steps), ref, atol=ATOL, rtol=0)
    # chunks ending before an image, right after one, and in the text between two
    splits = [3, images.ranges[0][1] + 2] + ([images.ranges[1][0] - 2] if num_images == 2 else [])
    torch.testing.assert_close(run_chunks(model, ids, images, splits, steps), ref, atol=ATOL, rtol=0)


def test_bidirectional_mask_matters(vlm):
    """The same prompt without the image tokens' two-way attention gives other logits (the test above would catch
    a causal-only mask)."""
    folder, reference = vlm
    model = load_model(open_model_source(folder), torch.float32)
    ids, images = prompt_with_images(model, 1)
    ours, causal = (run_chunks(model, ids, images, [], [], two_way) for two_way in (True, False))
    assert (ours - causal).abs().max() > 1e-2


def test_hub_names_and_config(vlm, tmp_path):
    """The Hub's checkpoint names (model.language_model..., vision_tower.vision_model...) and a config.json whose
    text_config spells only some fields (the rest transformers' Gemma 3 defaults, which this one restates)."""
    folder, reference = vlm
    hub = vm.copy_model(folder, tmp_path / "hub")
    renames = {"language_model.model.": "model.language_model.", "vision_tower.": "model.vision_tower.vision_model."}
    tensors = load_file(hub / "model.safetensors")
    renamed = {}
    for name, t in tensors.items():
        for old, new in renames.items():
            if name.startswith(old):
                name = new + name[len(old) :]
        renamed[name] = t
    save_file(renamed, hub / "model.safetensors")
    config = json.loads((hub / "config.json").read_text())
    for key in ("rms_norm_eps", "hidden_activation", "max_position_embeddings"):
        config["text_config"].pop(key, None)
    (hub / "config.json").write_text(json.dumps(config))
    model = load_model(open_model_source(hub), torch.float32)
    ids, images = prompt_with_images(model, 1)
    pixels = torch.stack([image.pixels for image in images.images])
    ref = vm.reference_logits(reference, ids, pixels)
    torch.testing.assert_close(run_chunks(model, ids, images, [], []), ref, atol=ATOL, rtol=0)
