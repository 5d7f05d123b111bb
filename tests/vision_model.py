"""The tests' tiny Gemma 3 vision-language model: transformers' Gemma3ForConditionalGeneration with random weights
(norms too), a 2-layer SigLIP tower over 32x32 images (8x8 patches pooled to 16 image tokens) and a 2-layer text
model (a sliding layer whose window, 12, is shorter than an image's 16 tokens, and a global one), saved with the
embedded model's tokenizer plus Gemma 3's three image tokens and its chat template."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import torch

from .families import BASE_CONFIG
from .families.gemma3 import GEMMA3_CHAT_TEMPLATE

IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
TOKENS_PER_IMAGE, IMAGE_SIZE, WINDOW = 16, 32, 12
VOCAB = 49155  # the embedded tokenizer's 49152 tokens and the three image tokens


def text_config() -> dict:
    return dict(
        BASE_CONFIG, vocab_size=VOCAB, head_dim=16, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16,
        sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"], rope_theta=1e6,
        tie_word_embeddings=True,
    )  # fmt: skip


def vision_config() -> dict:
    return dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=IMAGE_SIZE,
        patch_size=4, vision_use_head=False, layer_norm_eps=1e-6,
    )  # fmt: skip


def build_vlm(folder: Path, tokenizer_dir: Path, seed: int = 0) -> torch.nn.Module:
    """Saves the model and tokenizer in `folder`; returns transformers' model (fp32, eager attention)."""
    from transformers import AutoTokenizer, Gemma3Config, Gemma3ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": list(IMAGE_TOKENS)})
    tok.chat_template = GEMMA3_CHAT_TEMPLATE
    boi, eoi, image = tok.convert_tokens_to_ids(list(IMAGE_TOKENS))
    cfg = Gemma3Config(
        text_config=text_config(), vision_config=vision_config(), mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=boi, eoi_token_index=eoi, image_token_index=image,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            std = 0.5 if "norm" in name else 0.08
            param.copy_(torch.randn(param.shape, generator=gen) * std + (1.0 if "layer_norm" in name else 0.0))
            if "input_projection" in name:  # llama.cpp stores it F16: these values survive that exactly
                param.copy_(param.half().float())
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Gemma3ForConditionalGeneration.from_pretrained(
        folder, attn_implementation="eager", torch_dtype=torch.float32
    ).eval()


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def png_bytes(seed: int, size: tuple[int, int] = (40, 24)) -> bytes:
    """A random RGB PNG (not square, not the model's size: preprocessing resizes it)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def reference_pixels(images: list[bytes]) -> torch.Tensor:
    """transformers' Gemma 3 image processor (the PIL one) on the images: (N, 3, 32, 32)."""
    from PIL import Image
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    proc = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    pil = [Image.open(io.BytesIO(b)) for b in images]
    return torch.as_tensor(np.asarray(proc(pil, return_tensors="np")["pixel_values"]))


def reference_logits(model, ids: list[int], pixels: torch.Tensor | None) -> torch.Tensor:
    """transformers' logits for a prompt whose image tokens are already expanded (token_type_ids: 1 on them)."""
    input_ids = torch.tensor([ids])
    token_type_ids = (input_ids == model.config.image_token_id).long()
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixels, token_type_ids=token_type_ids)
    return out.logits[0].float()


def reference_greedy(model, ids: list[int], pixels: torch.Tensor | None, n: int) -> list[int]:
    """transformers' greedy tokens (whole-prompt forward passes, the image tokens' two-way mask each time)."""
    ids, out = list(ids), []
    for _ in range(n):
        token = int(reference_logits(model, ids, pixels)[-1].argmax())
        ids.append(token)
        out.append(token)
    return out


def expand_images(ids: list[int], tokenizer, image_token_ids: tuple[int, int, int]) -> list[int]:
    """Gemma 3's processor's expansion of each start token ("\\n\\n", start, 16 image tokens, end, "\\n\\n"), at the
    token level: the test's own statement of the placeholder."""
    boi, eoi, image = image_token_ids
    newline = tokenizer.encode("\n\n", add_special_tokens=False)
    out = []
    for t in ids:
        out += newline + [boi] + [image] * TOKENS_PER_IMAGE + [eoi] + newline if t == boi else [t]
    return out


def png_chunks(width: int, height: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand (RGB, 8 bits): its header may declare any size, its data may be short."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\x00" * (1 + 3 * width) * height)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def data_url(image: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(image).decode()


def reference_chat_ids(folder: Path, messages: list[dict]) -> list[int]:
    """transformers' tokens of a chat with images: the template's text with each start token replaced by Gemma 3's
    processor's full image sequence, tokenized by transformers' tokenizer (the processor's own steps)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    boi, eoi, image = IMAGE_TOKENS
    text = text.replace(boi, f"\n\n{boi}{image * TOKENS_PER_IMAGE}{eoi}\n\n")
    return tok(text, add_special_tokens=False)["input_ids"]
