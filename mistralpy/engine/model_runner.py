"""ModelRunner: owns the model and its paged KV cache; turns a SchedulerOutput into tensors and sampled tokens."""

from __future__ import annotations

import math
import mmap
from concurrent.futures import wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..device import Placement, kernel_module, place_model
from ..embed.pooling import pool
from ..heap import StepTrim
from ..layers.attention import AttentionMetadata, PrefillSpan
from ..layers.kv_cache import cache_shape, storage_dtype
from ..layers.native import bind_native
from ..multimodal.step_encoder import StepEncoder
from ..outputs import Logprob
from ..spec_decode.verify_rows import VerifySpan, accept, expand
from ..structured.step_masks import start_step_masks
from .graph_runner import cuda_graph_runner
from .layer_placement import placement_for
from .sampler import Sampler, compute_prompt_logprobs
from .scheduler import ScheduledRequest, SchedulerOutput
from .step_transfer import move_step

if TYPE_CHECKING:
    from ..config import EngineConfig
    from ..lora.manager import LoRAManager


@dataclass
class ModelRunnerOutput:
    sampled: dict[str, int] = field(default_factory=dict)
    logprobs: dict[str, dict[int, Logprob]] = field(default_factory=dict)
    prompt_logprobs: dict[str, list[dict[int, Logprob]]] = field(default_factory=dict)
    # requests that verified draft tokens: the tokens they emit, in order, and those tokens' logprobs
    verified: dict[str, list[int]] = field(default_factory=dict)
    verified_logprobs: dict[str, list[dict[int, Logprob] | None]] = field(default_factory=dict)
    pooled: dict[str, torch.Tensor] = field(default_factory=dict)  # embedding requests' vectors


@dataclass
class StepInputs:
    order: list[ScheduledRequest]
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_index: list[int]  # token index of each logits row: a sampled request's last token, or its 1 + K
    samplers: list[ScheduledRequest]
    rows: list  # the Request each logits row is sampled for (a verify step's rows are views: verify_rows.py)
    spans: dict[str, VerifySpan]  # the verifying requests' rows
    lora_slots: list[int] = field(default_factory=list)  # each token's LoRA slot (-1: none), with a LoRAManager
    images: dict = field(default_factory=dict)  # {"images": StepImages} when the step's chunks hold image tokens


class ModelRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        kv_cache_dtype: str = "auto",
        lora: LoRAManager | None = None,
        placement: Placement | None = None,
        config: EngineConfig | None = None,
    ) -> None:
        placement = placement or Placement(torch.device("cpu"), "native")
        self.device = placement.device
        self.model, self.lora = place_model(model, self.device), lora
        if hasattr(lora, "state"):  # LoRA slots (X-LoRA and AnyMoE models run on the CPU: runner_setup.py)
            lora.state.device = self.device
        self.block_size = block_size
        cfg = model.config
        native = kernel_module(placement)  # the C++ kernels, or the Triton ones (mistralpy.gpu) on a Triton placement
        bind_native(model, native)  # this engine's numerics, whatever another engine in the process loads later
        # layers on the devices of the config's device_layers / n_gpu_layers (None: all on the CPU), a KV pool each
        self.layer_map = placement_for(model, config)
        # one block past the block manager's: CUDA graphs' padding rows write there (graph_runner.py); its pages
        # are never touched otherwise
        self.pad_block, pool_blocks = num_blocks, num_blocks + 1
        if self.layer_map is None:
            shape = cache_shape(
                cfg.num_hidden_layers, pool_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim, kv_cache_dtype
            )
            kv_dtype = storage_dtype(dtype, kv_cache_dtype)
            on_cpu = self.device.type == "cpu"
            pools = [_lazy_zeros(shape, kv_dtype) if on_cpu else torch.zeros(shape, dtype=kv_dtype, device=self.device)]
        else:
            pools = self.layer_map.kv_pools(pool_blocks, block_size, cfg, kv_cache_dtype, dtype, _lazy_zeros)
        self.kv_cache = pools[0]
        self.kv_caches = [layer for pool in pools for layer in pool.unbind(0)]
        self.write_kernel = None if native is None else native.write_kv
        self.decode_kernel = None if native is None else native.decode_attention
        self.prefill_kernel = None if native is None else native.prefill_attention
        self.sampler = Sampler() if native is None else Sampler(native.apply_token_bitmask, native.argmax_rows)
        # structured output's masks for a step computed on a background thread while the forward runs (StepMasks)
        self.overlap_masks = True
        # only LongRoPE picks rotary rows by prompt length; the other models skip building them every step
        self.rotary = getattr(model, "rotary", None)  # encoders have absolute positions
        self.needs_prompt_lens = self.rotary is not None and self.rotary.long_rows_start is not None
        self.images = StepEncoder(model) if hasattr(model, "encode_images") else None  # vision-language models
        self.graphs = cuda_graph_runner(self, config, num_blocks)  # decode steps replayed from CUDA graphs
        self.step_trim = StepTrim() if self.device.type == "cpu" else None  # a prefill's freed activations returned

    def rotary_table(self, num_prompt_tokens: int) -> int | None:
        """Which rotary table a request's tokens use, where a model has several (LongRoPE): see Request.prefix_root."""
        return None if self.rotary is None else self.rotary.table_of(num_prompt_tokens)

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        if self.step_trim is not None:
            self.step_trim.before_step(sum(s.num_new_tokens for s in sched.scheduled))
        inputs = self._prepare(sched)
        requests = inputs.rows
        masks = start_step_masks(requests, self.model.config.vocab_size, self.overlap_masks)
        if self.lora is not None:
            self.lora.begin_step(inputs.lora_slots)
            inputs.meta.adapters_active = self.lora.adapters_active
            if hasattr(self.lora, "plan_step"):  # X-LoRA's fixed scalings (lora/xlora/non_granular.py)
                self.lora.plan_step(inputs)
        try:
            hidden = self._forward(inputs)
            if hasattr(self.lora, "record_step"):  # X-LoRA's scalings log (lora/xlora/manager.py)
                self.lora.record_step(inputs)
            out = ModelRunnerOutput()
            self._prompt_logprobs(inputs, hidden, out)
            self._pool(inputs, hidden, out)
            logits = self.model.compute_logits(hidden[inputs.logits_index]) if inputs.samplers else None
            if logits is not None and self.layer_map is not None:
                logits = self.layer_map.to_host(logits)
        except BaseException:
            if masks is not None:  # a failed step still waits for its masks: no thread may hold a matcher after it
                wait([masks])
            raise
        finally:
            if self.lora is not None:
                self.lora.end_step()
        if logits is not None:
            result = self.sampler.sample(logits, requests, None if masks is None else masks.result())
            _collect(inputs, result.token_ids, result.logprobs, out)
        return out

    @torch.inference_mode()
    def last_logits(self, sched: SchedulerOutput) -> dict[str, torch.Tensor]:
        """A forward pass that writes the scheduled tokens' K/V and samples nothing: the logits of each request whose
        last known token it computed (a draft model's step, spec_decode/draft_proposer.py)."""
        inputs = self._prepare(sched)
        hidden = self._forward(inputs)
        if not inputs.samplers:
            return {}
        logits = self.model.compute_logits(hidden[inputs.logits_index])
        return {s.request.request_id: row for s, row in zip(inputs.samplers, logits, strict=True)}

    def _forward(self, inputs: StepInputs) -> torch.Tensor:
        if self.graphs is not None and self.graphs.runs(inputs.meta, bool(inputs.images)):
            return self.graphs.replay(inputs.input_ids, inputs.positions, inputs.meta)
        return self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta, **inputs.images)

    def _prepare(self, sched: SchedulerOutput) -> StepInputs:
        # Single-token queries go first so attention can batch them in one call.
        order = sorted(sched.scheduled, key=lambda s: s.num_new_tokens > 1)
        ids, positions, slots, samplers, logits_index, rows = [], [], [], [], [], []
        spans: dict[str, VerifySpan] = {}
        prefills: list[PrefillSpan] = []
        decode_tables, decode_lens, prompt_lens, lora_slots = [], [], [], []
        offset = 0
        for s in order:
            req, n = s.request, s.num_new_tokens
            output = req.output_token_ids + s.spec_token_ids if s.spec_token_ids else req.output_token_ids
            ids.extend(_tokens(req.prompt_token_ids, output, s.start, n))
            if self.needs_prompt_lens:
                prompt_lens.extend([req.num_prompt_tokens] * n)
            if self.lora is not None:
                lora_slots.extend([req.lora_slot] * n)
            pos = torch.arange(s.start, s.start + n)
            table = torch.tensor(req.block_ids[: -(-(s.start + n) // self.block_size)], dtype=torch.long)
            positions.append(pos)
            slots.append(table[pos // self.block_size] * self.block_size + pos % self.block_size)
            if n == 1:
                decode_tables.append(table)
                decode_lens.append(s.start + 1)
            else:
                two_way = () if req.images is None else req.images.bidirectional(s.start, s.start + n)
                prefills.append(PrefillSpan(n, s.start + n, table, two_way))
            offset += n
            if s.samples and req.pooling is None and s.spec_token_ids:
                samplers.append(s)
                spans[req.request_id] = expand(req, s.spec_token_ids, len(rows), rows)
                logits_index.extend(range(offset - len(s.spec_token_ids) - 1, offset))
            elif s.samples and req.pooling is None:
                samplers.append(s)
                rows.append(req)
                logits_index.append(offset - 1)
        meta = AttentionMetadata(
            torch.cat(slots),
            len(decode_tables),
            prefills=prefills,
            write_kernel=self.write_kernel,
            prefill_kernel=self.prefill_kernel,
        )
        if self.needs_prompt_lens:
            meta.prompt_lens = torch.tensor(prompt_lens)
        if decode_tables:
            meta.decode_block_tables = torch.nn.utils.rnn.pad_sequence(decode_tables, batch_first=True)
            meta.decode_lens = torch.tensor(decode_lens)
            meta.decode_kernel = self.decode_kernel
        inputs = StepInputs(
            order, torch.tensor(ids), torch.cat(positions), meta, logits_index, samplers, rows, spans, lora_slots
        )
        if self.images is not None and any(s.request.images is not None for s in order):
            step = self.images.step_images([(s.request.images, s.start, s.num_new_tokens) for s in order])
            inputs.images = {} if step is None else {"images": step}
        move_step(inputs, self.device)
        return inputs

    def _prompt_logprobs(self, inputs: StepInputs, hidden: torch.Tensor, out: ModelRunnerOutput) -> None:
        offset = 0
        for s in inputs.order:
            req, n = s.request, s.num_new_tokens
            num = req.sampling_params.prompt_logprobs
            # Position p predicts prompt token p + 1; only positions inside the prompt count.
            end = min(s.start + n, req.num_prompt_tokens - 1)
            if num is not None and end > s.start:
                logits = self.model.compute_logits(hidden[offset : offset + end - s.start])
                targets = req.prompt_token_ids[s.start + 1 : end + 1]
                out.prompt_logprobs[req.request_id] = compute_prompt_logprobs(logits, targets, num)
            offset += n

    @staticmethod
    def _pool(inputs: StepInputs, hidden: torch.Tensor, out: ModelRunnerOutput) -> None:
        offset = 0
        for s in inputs.order:
            if s.request.pooling is not None:  # scheduled whole: these rows are all of its prompt's states
                out.pooled[s.request.request_id] = pool(hidden[offset : offset + s.num_new_tokens], s.request.pooling)
            offset += s.num_new_tokens


def _collect(inputs: StepInputs, token_ids: list[int], logprobs: list, out: ModelRunnerOutput) -> None:
    """The sampled rows -> each plain request's token, each verifying request's emitted tokens."""
    row = 0
    for s in inputs.samplers:
        rid = s.request.request_id
        span = inputs.spans.get(rid)
        if span is None:
            out.sampled[rid] = token_ids[row]
            if logprobs[row] is not None:
                out.logprobs[rid] = logprobs[row]
            row += 1
            continue
        width = len(span.drafts) + 1
        out.verified[rid] = emitted = accept(span, token_ids[row : row + width])
        out.verified_logprobs[rid] = logprobs[row : row + len(emitted)]
        row += width


def _lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Zeros, not empty: masked-out slots are still multiplied by 0 in attention, and 0 * NaN would poison it.
    An anonymous map's pages are mapped (already zero) on first touch, so the pool takes memory only as its blocks
    fill; torch.zeros would write every page up front. Small pages, not transparent huge ones: the first token of
    each layer would otherwise take 2 MB for its K and V each."""
    nbytes = max(1, math.prod(shape) * dtype.itemsize)
    pool = mmap.mmap(-1, nbytes)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        pool.madvise(mmap.MADV_NOHUGEPAGE)
    return torch.frombuffer(pool, dtype=torch.uint8).view(dtype).view(shape)


def _tokens(prompt: list[int], output: list[int], start: int, n: int) -> list[int]:
    p = len(prompt)
    if start >= p:
        return output[start - p : start - p + n]
    if start + n <= p:
        return prompt[start : start + n]
    return prompt[start:] + output[: start + n - p]
