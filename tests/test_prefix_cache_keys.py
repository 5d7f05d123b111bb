"""Prefix-cache keys cannot be made to collide: a real collision of the old key (Python's hash of (parent, tokens))
is kept apart, hits are checked against the block's tokens, and the key's root covers the caller's cache_salt."""

from __future__ import annotations

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.engine import block_manager
from mistralpy.engine.block_manager import BlockManager
from mistralpy.engine.request import Request

# Two 16-token blocks of valid token ids whose old keys are equal on 64-bit CPython (3.8 and later hash tuples of ints
# with the same invertible xxHash rounds): found by a distinguished-point collision search over the last five tokens.
FIXED = [504, 3458, 314, 1694, 4129, 30, 1250, 28, 260, 2345, 16]
BLOCK_A = FIXED + [6913, 14011, 16510, 18262, 8]
BLOCK_B = FIXED + [1090, 12593, 1825, 114, 1]
TAIL = [1024, 2048, 4095, 77, 5]
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def test_the_two_blocks_collide_under_the_old_key():
    assert BLOCK_A != BLOCK_B
    for parent in (None, 1):  # the old chain started from None, or 1 for LongRoPE's long rows
        assert hash((parent, tuple(BLOCK_A))) == hash((parent, tuple(BLOCK_B)))


def test_colliding_prompts_never_share_kv(tiny_llama):
    llm = LLM(str(tiny_llama[1]), block_size=16)
    first = llm.generate([BLOCK_A + TAIL], GREEDY)[0]
    again = llm.generate([BLOCK_A + TAIL[:2]], GREEDY)[0]  # block A is cached and found
    second = llm.generate([BLOCK_B + TAIL], GREEDY)[0]  # the old key would have found block A here
    assert (first.num_cached_tokens, again.num_cached_tokens, second.num_cached_tokens) == (0, 16, 0)
    uncached = LLM(str(tiny_llama[1]), block_size=16, enable_prefix_caching=False)
    for out, prompt in ((first, BLOCK_A + TAIL), (second, BLOCK_B + TAIL), (again, BLOCK_A + TAIL[:2])):
        assert out.outputs[0].token_ids == uncached.generate([prompt], GREEDY)[0].outputs[0].token_ids


def _request(request_id: str, tokens: list[int], root: bytes = b"") -> Request:
    return Request(request_id, tokens, SamplingParams(max_tokens=1), prefix_root=root)


def test_a_hit_is_checked_against_the_blocks_tokens(monkeypatch):
    """Even if two blocks' keys were equal, a hit needs equal token ids."""
    monkeypatch.setattr(block_manager, "block_key", lambda parent, tokens: b"every block collides")
    bm = BlockManager(num_blocks=8, block_size=16)
    a = _request("a", BLOCK_A + TAIL)
    assert bm.allocate_slots(a, a.num_tokens, bm.get_computed_blocks(a))
    assert bm.get_computed_blocks(_request("b", BLOCK_B + TAIL)) == []
    assert bm.get_computed_blocks(_request("c", BLOCK_A + TAIL)) == a.block_ids[:1]


@pytest.mark.parametrize(("salt_a", "salt_b", "shared"), [(None, None, True), ("t1", "t1", True), ("t1", "t2", False),
                                                          (None, "t1", False)])  # fmt: skip
def test_cache_salt_separates_tenants(tiny_llama, salt_a, salt_b, shared):
    llm = LLM(str(tiny_llama[1]), block_size=16)
    prompt = BLOCK_A + TAIL
    outs = [llm.generate({"prompt_token_ids": prompt, "cache_salt": salt}, GREEDY)[0] for salt in (salt_a, salt_b)]
    assert [o.num_cached_tokens for o in outs] == [0, 16 if shared else 0]
    assert outs[0].outputs[0].token_ids == outs[1].outputs[0].token_ids


def test_cache_salt_must_be_a_non_empty_string(tiny_llama):
    from mistralpy.errors import InvalidRequestError

    llm = LLM(str(tiny_llama[1]))
    for bad in ("", 7):
        with pytest.raises(InvalidRequestError, match="cache_salt"):
            llm.generate({"prompt": "Hi", "cache_salt": bad}, GREEDY)
    with pytest.raises(InvalidRequestError, match="unknown prompt keys"):
        llm.generate({"prompt": "Hi", "salt": "x"}, GREEDY)


def test_cache_salt_and_cached_tokens_over_http(client):
    """`cache_salt` in the request body (vLLM's field); usage.prompt_tokens_details.cached_tokens (OpenAI's)."""

    def cached(salt: str | None, stream: bool = False) -> int:
        extra = {"cache_salt": salt} if salt is not None else {}
        if not stream:
            out = client.completions.create(model="tiny", prompt=BLOCK_A + TAIL, max_tokens=2, extra_body=extra)
            return out.usage.prompt_tokens_details.cached_tokens
        chunks = client.completions.create(
            model="tiny", prompt=BLOCK_A + TAIL, max_tokens=2, stream=True,
            stream_options={"include_usage": True}, extra_body=extra,
        )  # fmt: skip
        return [c for c in chunks][-1].usage.prompt_tokens_details.cached_tokens

    assert cached("tenant-1") == 0
    assert cached("tenant-1") == 16 and cached("tenant-1", stream=True) == 16
    assert cached("tenant-2") == 0 and cached(None) == 0
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello " * 20}], max_tokens=1
    )
    assert chat.usage.prompt_tokens_details.cached_tokens == 0
    again = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello " * 20}], max_tokens=1
    )
    assert again.usage.prompt_tokens_details.cached_tokens == (again.usage.prompt_tokens - 1) // 16 * 16
