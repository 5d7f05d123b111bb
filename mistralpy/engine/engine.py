"""Engine: owns scheduler, model runner and output processor. Engine.step() is schedule -> execute -> update."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from ..config import EngineConfig, SchedulerConfig, resolve_dtype
from ..device import kv_cache_dtype_for, placement_of
from ..distributed.tensor_parallel.launch import start_tensor_parallel
from ..embed.default_model import default_model_for
from ..embed.outputs import EmbeddingRequestOutput
from ..embed.spec import source_embedding_spec
from ..embed.task import NO_SAMPLING, STEP_TOKENS, resolve_task
from ..errors import InvalidRequestError, PromptTooLongError
from ..generation_config import generation_defaults
from ..layers.kv_cache import default_kv_cache_dtype
from ..loader import GGMLParams, open_model_source
from ..loader.model_loader import load_model
from ..lora.extend import extend_model
from ..lora.request import LoRARequest
from ..lora.setup import setup_lora
from ..models import resolve_model_class
from ..multimodal.prompt_images import PromptImages
from ..onednn_caches import bound_onednn_caches
from ..outputs import RequestOutput
from ..quant.quantized_linear import QuantizedLinear
from ..sampling_params import SamplingParams
from ..spec_decode.speculator import make_speculator
from ..structured.compile_cache import GrammarCompiler
from ..structured.sampler_hooks import take_dead_grammars
from ..threads import ThreadPolicy
from ..tokenizer import Tokenizer
from .block_hash import model_key, root_key
from .block_manager import BlockManager
from .detokenizer import IncrementalDetokenizer
from .model_runner import ModelRunnerOutput
from .output_processor import OutputProcessor, ParentRequest, child_params
from .request import Request, RequestStatus
from .runner_setup import build_runner
from .scheduler import Scheduler, SchedulerOutput
from .weight_sites import kv_kernels, weight_sites

if TYPE_CHECKING:
    import llguidance


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        bound_onednn_caches()
        self.threads = ThreadPolicy(config.num_threads)  # first: the load is mostly parallel torch ops
        self.model_path = config.model or default_model_for(config.task)
        source = open_model_source(self.model_path, GGMLParams.from_engine_config(config))
        self.model_config = source.model_config()
        # fail on an unsupported architecture before any heavy work
        is_encoder = getattr(resolve_model_class(self.model_config), "is_encoder", False)
        self.task = resolve_task(config.task, is_encoder, config.pooling)
        self.embedding = None
        if self.task == "embed":
            self.embedding = source_embedding_spec(source, self.model_config.hidden_size, config.pooling, is_encoder)
        self.tokenizer = load_tokenizer(source, self.model_path, config.chat_template)
        self.generation_defaults: dict = generation_defaults(source, config.generation_config)
        self.dtype = resolve_dtype(config.dtype)
        self.placement = placement_of(config.device, config.kernels)  # before the load: its kernels pick the linears
        self.tp = start_tensor_parallel(config, self.model_path, self.placement)  # one process, or rank 0 of a group
        sites = weight_sites(config, self.placement, self.model_config)  # each weight's device as it is read
        model = load_model(
            source, self.dtype, config.show_progress, weights=config.weights, quantization=config.quantization,
            between_modules=self.threads.update, mmproj=config.mmproj, backend=self.placement.kernels,
            tensor_shard=self.tp.shard, sites=sites,
        )  # fmt: skip
        context = self.model_config.max_position_embeddings
        if self.embedding is not None and self.embedding.max_seq_length is not None:
            context = min(context, self.embedding.max_seq_length)
        max_model_len = config.max_model_len or context
        if max_model_len > context:
            raise InvalidRequestError(f"max_model_len {max_model_len} exceeds the model's context length {context}")
        step_tokens = config.max_num_batched_tokens or STEP_TOKENS[self.task]
        self.scheduler_config = SchedulerConfig(config.max_num_seqs, step_tokens, max_model_len)
        quantized = any(isinstance(m, QuantizedLinear) for m in model.modules())
        int8_default = default_kv_cache_dtype(quantized) == "int8"
        self.kv_cache_dtype = kv_cache_dtype_for(kv_kernels(sites, self.placement), config.kv_cache_dtype, int8_default)
        self.lora = setup_lora(model, config, self.dtype)  # adapters merged into the weights, slots for the others
        model, self.lora = extend_model(model, config, self.dtype, self.tokenizer, self.lora)  # X-LoRA, AnyMoE
        self.model_runner, num_blocks = build_runner(self, model, config, max_model_len, step_tokens)
        self.block_manager = BlockManager.for_config(num_blocks, config)
        self.scheduler = Scheduler(self.scheduler_config, self.block_manager)
        # what makes the K/V of equal tokens: the prefix cache's keys start from it
        self.model_key = model_key(
            self.model_path, self.dtype, self.kv_cache_dtype, config.weights, config.quantization,
            GGMLParams.from_engine_config(config), config.mmproj,
        )  # fmt: skip
        self.output_processor = OutputProcessor(self.tokenizer)
        self.eos_token_ids = frozenset(self.tokenizer.eos_token_ids) | frozenset(self.model_config.eos_token_ids)
        self.grammar_compiler = GrammarCompiler(self.tokenizer, self.eos_token_ids, self.model_config.vocab_size)
        spec = config.speculative_config
        self.speculator = None if spec is None else make_speculator(spec, self)
        self.images = PromptImages.for_model(model, self.tokenizer, self.scheduler_config.max_num_batched_tokens)
        self._ids = itertools.count()

    @property
    def max_model_len(self) -> int:
        return self.scheduler_config.max_model_len

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        prompt_token_ids: list[int] | None = None,
        cache_salt: str | None = None,
        grammar: llguidance.LLMatcher | None = None,
        lora_request: LoRARequest | None = None,
        images: list | None = None,
    ) -> str:
        """`prompt_token_ids`: a text prompt's tokens, when the caller tokenized it (the server does, off this
        thread); `prompt` is then kept as its text. `cache_salt` (vLLM's name): requests share prefix-cache blocks
        only with requests of the same salt, e.g. one salt per tenant, so that no tenant can probe another's prompts
        through cache hits. `grammar`: `params.structured_outputs` compiled by `self.grammar_compiler.template`,
        when the caller compiled it (the server does, off this thread, which then only copies it).
        `lora_request`: the LoRA adapter the request runs with (needs enable_lora), loaded into a slot if needed."""
        if cache_salt is not None and (not isinstance(cache_salt, str) or not cache_salt):
            raise InvalidRequestError("cache_salt must be a non-empty string")
        if self.task == "embed":
            raise InvalidRequestError("this model is served for embeddings (task 'embed'); it does not generate text")
        request_id = self._new_request_id(request_id)
        text = prompt if isinstance(prompt, str) else None
        if prompt_token_ids is not None:
            ids = list(prompt_token_ids)
        else:
            ids = self.tokenizer.encode(prompt) if text is not None else list(prompt)
        ids, request_images = self.images.attach(ids, images)
        self._validate_prompt(ids, params)
        children = []
        slot = self._lora_slot(lora_request)
        adapter = None if slot < 0 else self.lora.digest(slot)
        root = root_key(self.model_key, self.model_runner.rotary_table(len(ids)), cache_salt, adapter)
        for i in range(params.n):
            child_id = request_id if params.n == 1 else f"{request_id}-{i}"
            child = Request(child_id, ids, child_params(params, i), self.eos_token_ids, prefix_root=root)
            child.lora_slot, child.images = slot, request_images
            children.append(child)
        if params.structured_outputs is not None:
            template = grammar if grammar is not None else self.grammar_compiler.template(params.structured_outputs)
            for child in children:  # one matcher each: the n samples follow the grammar apart
                child.matcher = self.grammar_compiler.matcher(template)
        detoks = [
            IncrementalDetokenizer(
                self.tokenizer,
                ids,
                c.sampling_params.skip_special_tokens,
                c.sampling_params.stop,
                c.sampling_params.include_stop_str_in_output,
            )
            for c in children
        ]
        self.output_processor.add(ParentRequest(request_id, text, ids, children, detoks))
        for child in children:
            self.scheduler.add_request(child)
        return request_id

    def _lora_slot(self, lora_request: LoRARequest | None) -> int:
        if lora_request is None:
            return -1
        if self.lora is None:
            raise InvalidRequestError("a lora_request needs an engine started with enable_lora=True")
        if not isinstance(lora_request, LoRARequest):
            raise InvalidRequestError(f"lora_request must be a LoRARequest, got {type(lora_request).__name__}")
        return self.lora.acquire(lora_request, self._busy_lora_slots())

    def release_lora(self, lora_int_id: int) -> None:
        """Unload an adapter now if no unfinished request uses it (else LRU eviction frees its slot later)."""
        busy = self._busy_lora_slots()
        slot = None if self.lora is None else self.lora.slot_of(lora_int_id)
        if slot is not None and slot not in busy:
            self.lora.unload(lora_int_id, busy)

    def _busy_lora_slots(self) -> set[int]:
        return {r.lora_slot for r in (*self.scheduler.running, *self.scheduler.waiting)}

    def add_embed_request(
        self, prompt: str | list[int], dimensions: int | None = None, request_id: str | None = None,
        prompt_token_ids: list[int] | None = None,
    ) -> str:  # fmt: skip
        """An embedding request: its prompt's hidden states pooled into one vector (EmbeddingRequestOutput) in one
        step, batched with the other requests. `dimensions`: a Matryoshka model's shorter vector."""
        if self.embedding is None:
            raise InvalidRequestError("this engine generates text; embeddings need task 'embed' (serve --task embed)")
        request_id = self._new_request_id(request_id)
        if prompt_token_ids is None:
            prompt_token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        ids = list(prompt_token_ids)
        self.embedding.check_prompt(ids, self.model_config.vocab_size, self.max_model_len)
        pooling = self.embedding.request_params(dimensions)
        root = root_key(self.model_key, self.model_runner.rotary_table(len(ids)))
        self.scheduler.add_request(Request(request_id, ids, NO_SAMPLING, prefix_root=root, pooling=pooling))
        return request_id

    def _new_request_id(self, request_id: str | None) -> str:
        request_id = request_id if request_id is not None else str(next(self._ids))
        if request_id in self.output_processor.parents or request_id in self.scheduler.requests:
            raise InvalidRequestError(f"request id {request_id!r} is already in use")
        return request_id

    def _validate_prompt(self, ids: list[int], params: SamplingParams) -> None:
        if not ids:
            raise InvalidRequestError("the prompt is empty")
        vocab = self.model_config.vocab_size
        bad = next((t for t in ids if not isinstance(t, int) or not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidRequestError(f"prompt token id {bad!r} is outside the vocabulary (size {vocab})")
        params.verify_vocab(vocab)
        limit = self.max_model_len
        if len(ids) >= limit:
            raise PromptTooLongError(
                f"the prompt has {len(ids)} tokens; the model's context is {limit} tokens (prompt + output)"
            )
        if params.max_tokens is not None and len(ids) + params.max_tokens > limit:
            raise PromptTooLongError(
                f"the prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) exceeds the context "
                f"length of {limit} tokens"
            )

    def abort_request(self, request_id: str) -> None:
        parent = self.output_processor.parents.get(request_id)
        if parent is None:  # an embedding request, or one already finished
            self.scheduler.abort_request(request_id)
            return
        for child in parent.children:
            self.scheduler.abort_request(child.request_id)
        self.output_processor.remove(request_id)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self, delta: bool = False) -> list[RequestOutput]:
        """One engine step: the outputs of the requests it advanced, each whole so far, or with `delta` only what is
        new since that request's last delta output (text, tokens, logprobs; see OutputProcessor.make_output)."""
        if self.speculator is not None:
            self.speculator.propose(self.scheduler.running)
        sched = self.scheduler.schedule()
        if sched.is_empty:
            return []
        self.threads.update()
        result = self.model_runner.execute(sched)
        return self._update(sched, result, delta)

    def _update(self, sched: SchedulerOutput, result: ModelRunnerOutput, delta: bool) -> list[RequestOutput]:
        for s in sched.scheduled:
            entries = result.prompt_logprobs.get(s.request.request_id)
            if entries is not None:
                s.request.merge_prompt_logprobs(s.start, entries)
        failed = take_dead_grammars(sched, result.sampled)
        touched = {}
        for req in self.scheduler.update_from_output(sched, result.sampled, result.verified):
            self._process_token(req, result.logprobs.get(req.request_id), touched)
        for s in sched.scheduled:
            emitted = result.verified.get(s.request.request_id)
            if emitted is not None:
                self.speculator.record(s.request.request_id, len(s.spec_token_ids), len(emitted))
                self._process_verified(s.request, emitted, result.verified_logprobs[s.request.request_id], touched)
        for req in failed:
            self.scheduler.finish_request(req, RequestStatus.FINISHED_ERROR)
            touched.setdefault(*self.output_processor.process_end(req))
        outputs: list = [self.output_processor.make_output(p, delta) for p in touched.values()]
        for s in sched.scheduled:
            vector = result.pooled.get(s.request.request_id)
            if vector is not None:
                outputs.append(EmbeddingRequestOutput.of(s.request.request_id, s.request.prompt_token_ids, vector))
        return outputs

    def _process_verified(self, req: Request, tokens: list[int], logprobs: list, touched: dict) -> None:
        """A verify step's tokens, in order, each checked for every stop condition before the next is taken."""
        for token, lp in zip(tokens, logprobs, strict=True):
            self.scheduler.append_token(req, token)
            self._process_token(req, lp, touched)
            if req.is_finished:
                return

    def _process_token(self, req: Request, logprob: dict | None, touched: dict) -> None:
        if logprob is not None:
            req.logprobs.append(logprob)
        stop = self.output_processor.process_token(req)
        if stop is not None:
            req.stop_reason = stop
            if req.is_finished:  # also hit max_tokens this step: the stop string wins, as text was cut
                req.status = RequestStatus.FINISHED_STOPPED
            else:
                self.scheduler.finish_request(req, RequestStatus.FINISHED_STOPPED)
        parent, _ = self.output_processor.child_to_parent[req.request_id]
        touched[parent.request_id] = parent


def load_tokenizer(source, model_path: str, chat_template: str | None = None) -> Tokenizer:
    """The model's tokenizer; `chat_template` (a template's text) replaces the model's own template."""
    if hasattr(source, "metadata"):
        return Tokenizer.from_gguf_metadata(source.metadata, chat_template)
    return Tokenizer.from_folder(model_path, chat_template)
