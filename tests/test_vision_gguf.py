"""A Gemma 3 text GGUF with a separate projector file (`--mmproj`), both as llama.cpp writes them: logits equal to
the HF folder's of the same weights (with one image and two, chunked), images through LLM and `mistralpy run`;
a projector of another type, or one for another model's size, refused by name."""

from __future__ import annotations

import pytest
import torch

from mistralpy import LLM, SamplingParams
from mistralpy.errors import ModelLoadError
from mistralpy.loader import open_model_source
from mistralpy.loader.model_loader import load_model

from . import vision_model as vm
from .test_gemma3_vision import prompt_with_images, run_chunks
from .vision_gguf import swap_mlp_names, write_mmproj, write_text_gguf


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer_dir):
    folder = tmp_path_factory.mktemp("gemma3_vlm_gguf")
    reference = vm.build_vlm(folder, tokenizer_dir)
    text, mmproj = folder.parent / "gemma3-vlm-text.gguf", folder.parent / "mmproj-gemma3-vlm.gguf"
    write_text_gguf(reference, text)
    write_mmproj(reference, mmproj)
    return folder, text, mmproj, reference


@pytest.mark.parametrize("num_images", [1, 2])
def test_logits_equal_the_hf_folder(files, num_images):
    folder, text, mmproj, _ = files
    hf = load_model(open_model_source(folder), torch.float32)
    ours = load_model(open_model_source(text), torch.float32, mmproj=str(mmproj))
    assert ours.vision == hf.vision
    ids, images = prompt_with_images(hf, num_images)
    splits = [images.ranges[0][1] + 1]
    expected = run_chunks(hf, ids, images, [], [5, 6])
    torch.testing.assert_close(run_chunks(ours, ids, images, splits, [5, 6]), expected, atol=1e-5, rtol=0)


def test_legacy_swapped_mlp_names(files, tmp_path):
    folder, text, mmproj, _ = files
    swapped = tmp_path / "mmproj-legacy.gguf"
    swap_mlp_names(mmproj, swapped)
    hf = load_model(open_model_source(folder), torch.float32)
    ours = load_model(open_model_source(text), torch.float32, mmproj=str(swapped))
    ids, images = prompt_with_images(hf, 1)
    torch.testing.assert_close(
        run_chunks(ours, ids, images, [], []), run_chunks(hf, ids, images, [], []), atol=1e-5, rtol=0
    )


def test_llm_with_mmproj_answers_as_transformers(files):
    folder, text, mmproj, reference = files
    llm = LLM(str(text), dtype="float32", mmproj=str(mmproj))
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.encode("Look at", add_special_tokens=False) + [tok.convert_tokens_to_ids("<start_of_image>")]
    full = vm.expand_images(ids, tok, tuple(tok.convert_tokens_to_ids(list(vm.IMAGE_TOKENS))))
    expected = vm.reference_greedy(reference, full, vm.reference_pixels([vm.png_bytes(4)]), 4)
    out = llm.generate({"prompt_token_ids": ids, "multi_modal_data": {"image": vm.png_bytes(4)}}, params)
    assert out[0].outputs[0].token_ids == expected


def test_mismatched_projector_refused(files, tmp_path, tokenizer_dir):
    folder, text, mmproj, _ = files
    with pytest.raises(ModelLoadError, match="not a multimodal projector"):
        load_model(open_model_source(text), torch.float32, mmproj=str(text))
    with pytest.raises(Exception, match="--mmproj goes with a Gemma 3 text model"):
        load_model(open_model_source(folder), torch.float32, mmproj=str(mmproj))


def test_run_with_mmproj_and_image(files, tmp_path, capsys):
    from mistralpy.cli import main

    from .test_vision_inputs import reference_text

    folder, text, mmproj, reference = files
    image = tmp_path / "img.png"
    image.write_bytes(vm.png_bytes(6))
    args = ["run", "-m", str(text), "--mmproj", str(mmproj), "--dtype", "float32", "--image", str(image)]
    assert main([*args, "-p", "What is shown?", "--max-tokens", "5", "--temperature", "0"]) == 0
    expected = reference_text((folder, reference), "What is shown?", vm.png_bytes(6))
    assert capsys.readouterr().out.strip() == expected.strip()
