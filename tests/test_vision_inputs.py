"""Images as users send them: OpenAI's image_url content parts on a live `mistralpy serve` (answers equal
transformers' greedy tokens for the same chat, tokenized as Gemma 3's processor does), LLM.chat with a path and a
PIL image, `mistralpy run --image`; bad images, oversized ones, too many, URLs without --allow-image-urls and images
for a text-only model -> 400 with a message naming the problem, the server serving on."""

from __future__ import annotations

import asyncio
import io
import signal

import httpx
import pytest
from PIL import Image

from mistralpy import LLM, SamplingParams
from mistralpy.cli import main
from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

from . import vision_model as vm
from .server_process import ServerProcess

MAX_TOKENS = 5


@pytest.fixture(scope="module")
def vlm(tmp_path_factory, tokenizer_dir):
    folder = tmp_path_factory.mktemp("gemma3_vlm_inputs")
    return folder, vm.build_vlm(folder, tokenizer_dir)


def chat(text: str, *images: bytes) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": vm.data_url(b)}} for b in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def reference_text(vlm, text: str, *images: bytes) -> str:
    """transformers' greedy answer to the chat, decoded."""
    from transformers import AutoTokenizer

    folder, reference = vlm
    template_messages = [
        {"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]}
    ]
    ids = vm.reference_chat_ids(folder, template_messages)
    tokens = vm.reference_greedy(reference, ids, vm.reference_pixels(list(images)), MAX_TOKENS)
    return AutoTokenizer.from_pretrained(folder).decode(tokens, skip_special_tokens=True)


@pytest.fixture(scope="module")
def server(vlm):
    args = ("-m", str(vlm[0]), "--dtype", "float32", "--max-images-per-request", "2", "--max-image-bytes", "20000")
    proc = ServerProcess(*args, "--max-image-pixels", "1000000")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop(signal.SIGKILL)


def post(server, messages: list[dict], **extra) -> httpx.Response:
    body = {"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True, **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


def test_server_answers_as_transformers(vlm, server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="none")
    for images in ([vm.png_bytes(0)], [vm.png_bytes(1), vm.png_bytes(2)]):
        messages = chat("What is shown?", *images)
        out = client.chat.completions.create(
            model="default", messages=messages, max_tokens=MAX_TOKENS, temperature=0, extra_body={"ignore_eos": True}
        )
        assert out.choices[0].message.content == reference_text(vlm, "What is shown?", *images)


TRUNCATED = vm.png_bytes(0)[:60]
BAD_IMAGES = {
    "truncated PNG": (chat("x", TRUNCATED), "cannot be decoded|not an image"),
    "0x0 PNG": (chat("x", vm.png_chunks(0, 0, b"")), "not an image|at least one pixel|cannot be decoded"),
    "huge dimensions": (chat("x", vm.png_chunks(60000, 60000, b"\x00")), "max_image_pixels 1000000"),
    "large dimensions": (chat("x", vm.png_chunks(2000, 1000, b"\x00")), "2000x1000 pixels; .* at most 1000000 pixels"),
    "not an image": (chat("x", b"hello, this is text"), "not an image"),
    "too many bytes": (chat("x", vm.png_bytes(5, size=(200, 200))), "at most 20000 bytes"),
    "too many images": (chat("x", *(vm.png_bytes(i) for i in range(3))), "at most 2 images"),
    "bad base64": (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}],
        "not valid base64",
    ),
    "http URL": (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/a.png"}}]}],
        "--allow-image-urls",
    ),
    "image in a system message": (
        [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": vm.data_url(vm.png_bytes(0))}}]}]
        + chat("x"),
        "user messages",
    ),
    "detail high": (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,", "detail": "high"}}]}],
        "detail",
    ),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_400_and_the_server_serves_on(server, case):
    messages, message = BAD_IMAGES[case]
    r = post(server, messages)
    assert r.status_code == 400, r.text
    import re

    assert re.search(message, r.json()["error"]["message"]), r.json()
    r = post(server, chat("and now a good one", vm.png_bytes(3)))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == MAX_TOKENS


def test_text_only_model_refuses_images(tiny_llama):
    async def run() -> None:
        engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[2]), dtype="float32"))
        transport = httpx.ASGITransport(app=create_app(engine, "m"), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post(
                "/v1/chat/completions", json={"messages": chat("x", vm.png_bytes(0)), "max_tokens": 2}
            )
            assert r.status_code == 400 and "does not take images" in r.json()["error"]["message"]
        await engine.shutdown()

    asyncio.run(run())


def test_llm_chat_with_a_path_and_a_pil_image(vlm, tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(vm.png_bytes(1))
    pil = Image.open(io.BytesIO(vm.png_bytes(2)))
    llm = LLM(str(vlm[0]), dtype="float32")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": str(path)}},
                {"type": "image", "image": pil},
                {"type": "text", "text": "What is shown?"},
            ],
        }
    ]
    out = llm.chat(messages, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert out[0].outputs[0].text == reference_text(vlm, "What is shown?", vm.png_bytes(1), vm.png_bytes(2))


def test_run_with_image(vlm, tmp_path, capsys):
    path = tmp_path / "img.png"
    path.write_bytes(vm.png_bytes(0))
    args = ["run", "-m", str(vlm[0]), "--dtype", "float32", "--image", str(path), "-p", "What is shown?"]
    assert main([*args, "--max-tokens", str(MAX_TOKENS), "--temperature", "0"]) == 0
    expected = reference_text(vlm, "What is shown?", vm.png_bytes(0))
    assert capsys.readouterr().out.strip() == expected.strip()
    assert main(["run", "-m", str(vlm[0]), "--image", str(tmp_path / "missing.png"), "-p", "x"]) == 1
    assert "cannot read image" in capsys.readouterr().err
