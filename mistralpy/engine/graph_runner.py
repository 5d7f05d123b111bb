"""GraphRunner: decode-only steps replayed from graphs captured once per batch size (CUDA graphs, as vLLM).

A graph replays the kernels it captured over the same memory, so everything a decode step reads lives in static
buffers: token ids, positions, slot mapping, block tables and context lengths, sized for the largest captured batch
and the widest block table. A step of B sequences fills the first B rows and pads up to the smallest captured size
>= B; a padding row reads token 0 at position 0 from the padding block (one block past the block manager's: the
KV pool has it) and writes its K/V there, so no real row's cache or output is touched. Steps with prefill tokens,
more sequences than the largest size, LoRA adapters, images or LongRoPE rows run eagerly.

The graphs come from an injected factory: `CudaGraphFactory` (torch.cuda.CUDAGraph) on a GPU, a recording fake in
the tests. Sizes are captured largest first, so the smaller graphs reuse the larger ones' memory pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..layers.attention import AttentionMetadata
from ..layers.moe import SparseMoeBlock
from ..layers.rotary import RotaryEmbedding


def capture_sizes(max_num_seqs: int) -> list[int]:
    """vLLM's batch sizes to capture, 1, 2, 4, then every multiple of 8 up to 256, those <= max_num_seqs."""
    return [n for n in [1, 2, 4, *range(8, 257, 8)] if n <= max_num_seqs]


class Graph(Protocol):
    def replay(self) -> None: ...


class GraphFactory(Protocol):
    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Graph, torch.Tensor]:
        """Record `fn` (one forward over the static buffers) -> (graph, the output tensor replays write into)."""


class CudaGraphFactory:
    def __init__(self) -> None:
        self.pool = None  # the graphs' shared memory pool

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Graph, torch.Tensor]:
        stream = torch.cuda.Stream()  # warm-up off the capture (lazy library init, workspace allocation)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn()
        self.pool = graph.pool()
        return graph, out


@dataclass
class StaticInputs:
    input_ids: torch.Tensor  # (S,) long
    positions: torch.Tensor  # (S,) long
    slot_mapping: torch.Tensor  # (S,) long
    block_tables: torch.Tensor  # (S, max_blocks) long
    context_lens: torch.Tensor  # (S,) long

    def data_ptrs(self) -> dict[str, int]:
        return {name: t.data_ptr() for name, t in vars(self).items()}


class GraphRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[torch.Tensor],
        sizes: list[int],
        max_blocks: int,
        pad_block: int,
        block_size: int,
        factory: GraphFactory,
        kernels: dict | None = None,
    ) -> None:
        """`pad_block`: the KV block the padding rows write (outside the block manager's); `kernels`: the attention
        kernels the metadata carries (write_kernel, decode_kernel), none on a GPU's torch path."""
        self.model, self.kv_caches, self.factory = model, kv_caches, factory
        self.sizes = sorted(sizes)
        self.pad_block, self.block_size, self.kernels = pad_block, block_size, kernels or {}
        device = kv_caches[0].device
        s = self.sizes[-1]
        zeros = dict(dtype=torch.long, device=device)
        self.static = StaticInputs(
            torch.zeros(s, **zeros), torch.zeros(s, **zeros), torch.zeros(s, **zeros),
            torch.zeros(s, max_blocks, **zeros), torch.zeros(s, **zeros),
        )  # fmt: skip
        self.graphs: dict[int, tuple[Graph, torch.Tensor]] = {}
        self.replays: list[tuple[int, int]] = []  # (batch, captured size) of each replay, for the tests and logs
        self.record_replays = False

    def capture_all(self) -> None:
        for m in self.model.modules():  # the rotary tables grown now: growing reads a position (a host sync)
            if isinstance(m, RotaryEmbedding):
                m.reserve(self.static.block_tables.shape[1] * self.block_size)
        self._pad(0)
        for size in reversed(self.sizes):
            if size not in self.graphs:
                self.graphs[size] = self.factory.capture(self._forward_fn(size))

    def runs(self, meta: AttentionMetadata, eager_only: bool) -> bool:
        """Whether a step replays a graph: decode tokens only, no more than the largest size, nothing eager-only."""
        decode_only = not meta.prefills and meta.num_decode_tokens > 0 and meta.prompt_lens is None
        width = 0 if meta.decode_block_tables is None else meta.decode_block_tables.shape[1]
        fits = meta.num_decode_tokens <= self.sizes[-1] and width <= self.static.block_tables.shape[1]
        return decode_only and fits and not eager_only and not meta.adapters_active

    def size_for(self, batch: int) -> int:
        return next(size for size in self.sizes if size >= batch)

    def replay(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """-> the step's (B, hidden) final hidden states: a view of the graph's output, valid until the next replay."""
        batch = meta.num_decode_tokens
        size = self.size_for(batch)
        st = self.static
        st.input_ids[:batch].copy_(input_ids)
        st.positions[:batch].copy_(positions)
        st.slot_mapping[:batch].copy_(meta.slot_mapping)
        width = meta.decode_block_tables.shape[1]
        st.block_tables[:batch, :width].copy_(meta.decode_block_tables)
        st.block_tables[:batch, width:].fill_(self.pad_block)
        st.context_lens[:batch].copy_(meta.decode_lens)
        self._pad(batch)
        graph, out = self.graphs[size]
        graph.replay()
        if self.record_replays:
            self.replays.append((batch, size))
        return out[:batch]

    def _pad(self, start: int) -> None:
        """Rows from `start` on: padding (token 0 at position 0, in the padding block, one token of context)."""
        st = self.static
        st.input_ids[start:].zero_()
        st.positions[start:].zero_()
        st.slot_mapping[start:].fill_(self.pad_block * self.block_size)
        st.block_tables[start:].fill_(self.pad_block)
        st.context_lens[start:].fill_(1)

    def _forward_fn(self, size: int) -> Callable[[], torch.Tensor]:
        st = self.static
        meta = AttentionMetadata(
            st.slot_mapping[:size], size, st.block_tables[:size], st.context_lens[:size], **self.kernels
        )

        def forward() -> torch.Tensor:
            meta._masks.clear()  # a mask built in an earlier run (the warm-up) must be rebuilt inside the capture
            return self.model(st.input_ids[:size], st.positions[:size], self.kv_caches, meta)

        return forward


def graphs_off_reason(model: torch.nn.Module, kv_device: torch.device, config, eager_model: bool) -> str | None:
    """Why a runner's decode steps run eagerly, or None where they replay CUDA graphs. `eager_model`: LoRA adapters
    or LongRoPE rows (chosen per request on the host)."""
    if config is None:
        return "no engine config (a draft model's runner)"
    if config.enforce_eager:
        return "enforce_eager"
    if kv_device.type != "cuda":
        return f"the KV cache is on {kv_device}: graphs are CUDA's"
    if any(p.device != kv_device for p in model.parameters()):
        return "the model spans devices (device_layers / n_gpu_layers)"
    if eager_model:
        return "LoRA adapters or LongRoPE rows are picked per request on the host"
    if any(isinstance(m, SparseMoeBlock) for m in model.modules()):
        return "MoE routing groups tokens by expert on the host"
    return None


def cuda_graph_runner(runner, config, num_blocks: int) -> GraphRunner | None:
    """The ModelRunner's captured GraphRunner, or None (see graphs_off_reason)."""
    kv_device = runner.kv_caches[0].device
    eager_model = runner.lora is not None or runner.needs_prompt_lens
    if graphs_off_reason(runner.model, kv_device, config, eager_model) is not None:
        return None
    max_len = config.max_model_len or runner.model.config.max_position_embeddings
    max_blocks = min(num_blocks, -(-max_len // runner.block_size))
    sizes = capture_sizes(config.max_num_seqs)
    graphs = GraphRunner(
        runner.model, runner.kv_caches, sizes, max_blocks, runner.pad_block, runner.block_size, CudaGraphFactory()
    )
    graphs.capture_all()
    return graphs
