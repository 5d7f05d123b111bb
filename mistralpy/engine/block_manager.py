"""KV block bookkeeping: a free list, reference counts and a hash-chained prefix cache. Plain ints, no tensors.

A full block's key is a SHA-256 digest chained over the key of the block before it and its own token ids, from a root
that covers what else changes the K/V (block_hash.py), so equal keys mean equal prefixes. A hit is also checked against
the block's stored token ids. Freed blocks keep their key and stay findable until the free list hands them out again
(LRU order).

The KV pool's memory is taken as its blocks are first written (model_runner), so which free block is handed out
decides the resident memory. Freed blocks stay cached up to `max_idle_blocks` of them: below that a block never used
yet is handed out (the cache keeps its prefixes), at or above it the least recently freed block is (its prefix
evicted). The resident cache is thus about the most tokens in flight at once plus that many idle cached blocks, not
the whole pool; max_idle_blocks = num_blocks is vLLM's policy (the whole pool caches prefixes).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .block_hash import block_key
from .request import Request

if TYPE_CHECKING:
    from ..config import EngineConfig


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None
    token_ids: tuple[int, ...] = ()  # the tokens block_hash was made from, compared on every hit


@dataclass
class PrefixCacheStats:
    queries: int = 0  # prompt tokens looked up
    hits: int = 0  # prompt tokens found cached


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True, idle_tokens: int | None = None
    ) -> None:
        """`idle_tokens`: the freed tokens kept cached before the least recently freed are reused (None: a quarter
        of the pool)."""
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        idle = num_blocks // 4 if idle_tokens is None else -(-idle_tokens // block_size)
        self.max_idle_blocks = idle if enable_prefix_caching else 0
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: OrderedDict[int, None] = OrderedDict()  # freed blocks, least recently freed first
        self.num_unused = num_blocks  # blocks [num_blocks - num_unused, num_blocks) were never handed out
        self.hash_to_block: dict[bytes, int] = {}
        self.stats = PrefixCacheStats()

    @classmethod
    def for_config(cls, num_blocks: int, config: EngineConfig) -> BlockManager:
        return cls(num_blocks, config.block_size, config.enable_prefix_caching, config.prefix_cache_tokens)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids) + self.num_unused

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_computed_blocks(self, request: Request) -> list[int]:
        """Longest run of cached full blocks at the start of the request's tokens (never all of them:
        the last token must be computed to get logits)."""
        if not self.enable_prefix_caching or request.sampling_params.prompt_logprobs is not None:
            return []
        tokens = request.all_token_ids
        hits: list[int] = []
        parent = request.prefix_root
        for i in range(_cacheable(request, len(tokens) - 1) // self.block_size):
            block_tokens = tuple(tokens[i * self.block_size : (i + 1) * self.block_size])
            parent = _key(parent, block_tokens, request, i, self.block_size)
            block_id = self.hash_to_block.get(parent)
            if block_id is None or self.blocks[block_id].token_ids != block_tokens:
                break
            hits.append(block_id)
        self.stats.queries += len(tokens)
        self.stats.hits += len(hits) * self.block_size
        return hits

    def allocate_slots(self, request: Request, num_new_tokens: int, computed_blocks: list[int] = ()) -> bool:
        """Make room for num_new_tokens more tokens (after taking computed_blocks on admission). False if full."""
        have = len(request.block_ids) + len(computed_blocks)
        total = request.num_computed_tokens + len(computed_blocks) * self.block_size + num_new_tokens
        need = self.blocks_needed(total) - have
        reusable = sum(1 for b in computed_blocks if self.blocks[b].ref_count == 0)
        if need > self.num_free_blocks - reusable:
            return False
        for b in computed_blocks:
            self._touch(b)
        request.block_ids.extend(computed_blocks)
        request.num_computed_tokens += len(computed_blocks) * self.block_size
        for _ in range(need):
            request.block_ids.append(self._pop_free())
        self._cache_full_blocks(request, total)
        return True

    def free(self, request: Request) -> None:
        # Reversed so that a request's last blocks are evicted first: its prefix stays cached longest.
        for block_id in reversed(request.block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_ids[block_id] = None
        request.block_ids = []

    def trim(self, request: Request, num_tokens: int) -> None:
        """Free the request's blocks past those num_tokens tokens need (rejected draft tokens' slots). Such blocks
        never held a full block of known tokens, so none of them is in the prefix cache."""
        keep = self.blocks_needed(num_tokens)
        for block_id in reversed(request.block_ids[keep:]):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_ids[block_id] = None
        del request.block_ids[keep:]

    def _touch(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_ids[block_id]
        block.ref_count += 1

    def _pop_free(self) -> int:
        if self.num_unused and len(self.free_ids) < self.max_idle_blocks or not self.free_ids:
            block_id = self.num_blocks - self.num_unused
            self.num_unused -= 1
            self.blocks[block_id].ref_count = 1
            return block_id
        block_id, _ = self.free_ids.popitem(last=False)
        block = self.blocks[block_id]
        if block.block_hash is not None:
            if self.hash_to_block.get(block.block_hash) == block_id:
                del self.hash_to_block[block.block_hash]
            block.block_hash, block.token_ids = None, ()
        block.ref_count = 1
        return block_id

    def _cache_full_blocks(self, request: Request, num_tokens: int) -> None:
        """Register the hashes of blocks that will be full once num_tokens tokens are computed."""
        if not self.enable_prefix_caching:
            return
        tokens = request.all_token_ids
        parent = request.prefix_root
        for i in range(_cacheable(request, min(num_tokens, len(tokens))) // self.block_size):
            block = self.blocks[request.block_ids[i]]
            if block.block_hash is None:
                block.token_ids = tuple(tokens[i * self.block_size : (i + 1) * self.block_size])
                block.block_hash = _key(parent, block.token_ids, request, i, self.block_size)
                self.hash_to_block.setdefault(block.block_hash, block.block_id)
            parent = block.block_hash


def _cacheable(request: Request, num_tokens: int) -> int:
    return num_tokens if request.cache_limit is None else min(num_tokens, request.cache_limit)


def _key(parent: bytes, tokens: tuple[int, ...], request: Request, index: int, block_size: int) -> bytes:
    """A block's key; a block holding image tokens adds its images' hashes (equal placeholders, other K/V)."""
    images = request.images
    salt = b"" if images is None else images.block_salt(index * block_size, (index + 1) * block_size)
    return block_key(parent, tokens, salt) if salt else block_key(parent, tokens)
