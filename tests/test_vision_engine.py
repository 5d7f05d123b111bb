"""Images through the engine on the tiny Gemma 3 vision model (fp32): each request's greedy tokens equal
transformers' alone, whether prefilled whole or in chunks (an image never split), batched with text requests and
other images, preempted and recomputed, or served by prefix-cache blocks; blocks holding image tokens are keyed by
the image (equal placeholders, other images: no hit)."""

from __future__ import annotations

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError

from . import vision_model as vm

GREEDY = SamplingParams(temperature=0, ignore_eos=True, max_tokens=6)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory, tokenizer_dir):
    folder = tmp_path_factory.mktemp("gemma3_vlm_engine")
    return folder, vm.build_vlm(folder, tokenizer_dir)


@pytest.fixture(scope="module")
def cases(vlm):
    """(prompt ids with start tokens, image bytes, transformers' greedy tokens) for an image prompt, a two-image
    prompt, the first prompt with another image, and a text prompt."""
    folder, reference = vlm
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    boi, eoi, image = tok.convert_tokens_to_ids(list(vm.IMAGE_TOKENS))
    words = tok.encode("Look at this", add_special_tokens=False)
    specs = [
        (words + [boi] + tok.encode(" and say", add_special_tokens=False), [vm.png_bytes(0)]),
        (words + [boi] + tok.encode(" then", add_special_tokens=False) + [boi], [vm.png_bytes(1), vm.png_bytes(2)]),
        (words + [boi] + tok.encode(" and say", add_special_tokens=False), [vm.png_bytes(3)]),
        (tok.encode("Only text here, no picture at all", add_special_tokens=False), []),
    ]
    out = []
    for ids, images in specs:
        full = vm.expand_images(ids, tok, (boi, eoi, image))
        pixels = vm.reference_pixels(images) if images else None
        out.append((ids, images, vm.reference_greedy(reference, full, pixels, GREEDY.max_tokens)))
    return out


def run(llm: LLM, requests) -> list[list[int]]:
    ids = [llm.engine.add_request(prompt, GREEDY, images=images) for prompt, images, _ in requests]
    return [out.outputs[0].token_ids for out in llm._run(ids, False)]


def test_each_request_alone(vlm, cases):
    llm = LLM(str(vlm[0]), dtype="float32", block_size=4, enable_prefix_caching=False)
    for case in cases:
        assert run(llm, [case]) == [case[2]]


def test_batch_mixing_images_and_text_chunked(vlm, cases):
    """All four at once, a budget of 24 tokens a step: prompts run in chunks beside each other's decode steps."""
    llm = LLM(str(vlm[0]), dtype="float32", block_size=4, max_num_batched_tokens=24)
    assert run(llm, cases) == [c[2] for c in cases]
    assert llm.engine.scheduler.stats.max_batch_size > 1


def test_an_image_is_never_split_between_chunks(vlm, cases):
    llm = LLM(str(vlm[0]), dtype="float32", block_size=4, max_num_batched_tokens=20)
    seen = []
    runner = llm.engine.model_runner
    prepare = runner._prepare

    def spy(sched):
        inputs = prepare(sched)
        seen.extend((s.request, s.start, s.num_new_tokens) for s in sched.scheduled if s.request.images is not None)
        return inputs

    runner._prepare = spy
    assert run(llm, cases[:2]) == [c[2] for c in cases[:2]]
    for req, start, n in seen:
        assert all(not (a < start + n < b) for a, b in req.images.ranges)
    assert len({(id(r), s) for r, s, _ in seen}) > 2  # prompts of 40+ tokens in chunks of at most 20


def test_preemption_recomputes(vlm, cases):
    """A KV cache too small for three prompts at once: one is preempted and recomputed (its images' embeddings kept)."""
    llm = LLM(str(vlm[0]), dtype="float32", block_size=4, num_kv_blocks=25, max_model_len=100)
    assert run(llm, cases[:3]) == [c[2] for c in cases[:3]]
    assert llm.engine.scheduler.stats.num_preemptions > 0


def test_prefix_cache_is_keyed_by_image(vlm, cases):
    llm = LLM(str(vlm[0]), dtype="float32", block_size=4)
    stats = llm.engine.block_manager.stats
    assert run(llm, [cases[0]]) == [cases[0][2]]
    hits = stats.hits
    assert run(llm, [cases[0]]) == [cases[0][2]]  # the same image again: its blocks hit
    assert stats.hits - hits >= 16
    hits = stats.hits
    assert run(llm, [cases[2]]) == [cases[2][2]]  # same tokens, another image: only the blocks before it hit
    before_image = len(cases[0][0]) - 1 + 2  # the words and "\n\n" up to the start token
    assert 0 < stats.hits - hits <= before_image


def test_embeddings_cached_by_image_hash(vlm, cases):
    """Without prefix caching, the same image again is not encoded again."""
    llm = LLM(str(vlm[0]), dtype="float32", block_size=4, enable_prefix_caching=False)
    cache = llm.engine.model_runner.images.cache
    assert run(llm, [cases[0]]) == [cases[0][2]]
    assert (cache.hits, cache.misses) == (0, 1)
    assert run(llm, [cases[0]]) == [cases[0][2]]
    assert (cache.hits, cache.misses) == (1, 1)


def test_image_inputs_checked(vlm):
    llm = LLM(str(vlm[0]), dtype="float32", block_size=4)
    tok = llm.get_tokenizer()
    boi = llm.engine.images.spec.start_token_id
    with pytest.raises(InvalidRequestError, match="1 image placeholders .* 2 images"):
        llm.engine.add_request([5, boi, 6], GREEDY, images=[vm.png_bytes(0), vm.png_bytes(1)])
    with pytest.raises(InvalidRequestError, match="image tokens but the request has no images"):
        llm.engine.add_request([5, llm.engine.images.spec.image_token_id, 6], GREEDY)
    with pytest.raises(InvalidRequestError, match="cannot be decoded|not an image"):
        llm.engine.add_request([5, boi, 6], GREEDY, images=[vm.png_bytes(0)[:100]])
    assert tok is not None and not llm.engine.has_unfinished_requests()
