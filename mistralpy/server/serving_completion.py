"""Text completions, request -> response: one or many prompts (text or token ids), n choices each, echo and
legacy logprobs. Choice i * n + j is sample j of prompt i, as OpenAI numbers them.

No HTTP here: `completion` returns a CompletionResponse, or (stream=True) a ChunkStream of CompletionResponse
chunks. The HTTP route (http_edge.py) and the in-process Runner both call it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..engine.async_engine import RequestStream
from ..outputs import CompletionOutput, Logprob, RequestOutput
from ..tokenizer import Tokenizer
from .context import ServerContext
from .logprobs import append_completion_logprobs
from .prompt_tokens import tokenize_prompts
from .protocol import CompletionRequest
from .responses import CompletionChoice, CompletionLogprobs, CompletionResponse, UsageInfo, now, random_id
from .streaming import Choice, ChunkStream, abort_all, add_streams, collect, merge
from .structured_compile import sampling_params


async def completion(
    ctx: ServerContext, body: CompletionRequest
) -> CompletionResponse | ChunkStream[CompletionResponse]:
    """Validation errors are raised here, before any output; a stream's requests are already admitted."""
    lora = ctx.lora_request(body.model, body.adapters)
    ctx.limits.check_completion(body)
    params, grammar = await sampling_params(ctx, body)
    prompts = await tokenize_prompts(ctx.engine.tokenizer, body.prompts())
    ctx.limits.check_tokens((len(p.ids) for p in prompts), params.n)
    request_id = random_id("cmpl")
    streams = await add_streams(ctx.engine, prompts, params, request_id, body.cache_salt, grammar, lora)
    if body.stream:
        return ChunkStream(CompletionChunks(ctx, body, request_id).run(streams), streams)
    results = await collect(streams, params.n)
    builder = ChoiceBuilder(ctx.engine.tokenizer, body)
    choices = []
    for i, result in enumerate(results):
        builder.set_prompt(result.prompt, result.prompt_token_ids, result.prompt_logprobs)
        for j, c in enumerate(result.choices):
            choices.append(builder.build(i * params.n + j, c, with_prompt=body.echo))
    num_prompt = sum(len(r.prompt_token_ids) for r in results)
    num_generated = sum(len(c.token_ids) for r in results for c in r.choices)
    num_cached = sum(r.num_cached_tokens for r in results)
    return CompletionResponse(
        id=request_id,
        created=now(),
        model=ctx.response_model(body.model),
        choices=choices,
        usage=UsageInfo.of(num_prompt, num_generated, num_cached),
    )


class ChoiceBuilder:
    """Text and logprobs of one choice, with the prompt in front when echo is on."""

    def __init__(self, tokenizer: Tokenizer, body: CompletionRequest) -> None:
        self.tokenizer = tokenizer
        self.body = body
        self.prompt_text = ""
        self.prompt_ids: list[int] = []
        self.prompt_logprobs: list[dict[int, Logprob] | None] | None = None

    def set_prompt(self, text: str | None, ids: list[int], logprobs: list | None) -> None:
        self.prompt_text = text if text is not None else self.tokenizer.decode(ids, skip_special_tokens=False)
        self.prompt_ids, self.prompt_logprobs = ids, logprobs

    def build(self, index: int, c: Choice | CompletionOutput, with_prompt: bool, offset: int = 0) -> CompletionChoice:
        text = (self.prompt_text if with_prompt else "") + c.text
        logprobs = None
        if self.body.logprobs is not None:
            logprobs, num = CompletionLogprobs(), self.body.logprobs
            if with_prompt and self.prompt_logprobs is not None:
                entries = self.prompt_logprobs
                offset = append_completion_logprobs(logprobs, entries, self.prompt_ids, num, self.tokenizer, offset)
            append_completion_logprobs(logprobs, c.logprobs or [], c.token_ids, num, self.tokenizer, offset)
        return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=c.finish_reason)


class CompletionChunks:
    """Text chunks per choice (the first one carrying the echoed prompt), a finish chunk per choice, then a usage
    chunk (choices: []) when stream_options.include_usage asks for one."""

    def __init__(self, ctx: ServerContext, body: CompletionRequest, request_id: str) -> None:
        self.ctx, self.body, self.request_id = ctx, body, request_id
        self.created = now()
        self.n = body.n
        self.builders: dict[int, ChoiceBuilder] = {}
        self.offsets: dict[int, int] = {}  # choice index -> text_offset of its next token
        self.echoed: set[int] = set()
        self.num_prompt = 0
        self.num_generated = 0
        self.num_cached: dict[int, int] = {}  # prompt index -> its prefix-cache hits

    def chunk(self, choices: list[CompletionChoice], usage: UsageInfo | None = None) -> CompletionResponse:
        return CompletionResponse(
            id=self.request_id,
            created=self.created,
            model=self.ctx.response_model(self.body.model),
            choices=choices,
            usage=usage,
        )

    async def run(self, streams: list[RequestStream]) -> AsyncIterator[CompletionResponse]:
        try:
            async for i, out in merge(streams):
                for piece in self.pieces(i, out):
                    yield piece
            if self.body.include_usage:
                yield self.chunk([], UsageInfo.of(self.num_prompt, self.num_generated, sum(self.num_cached.values())))
        finally:
            abort_all(streams)

    def pieces(self, i: int, out: RequestOutput) -> list[CompletionResponse]:
        self.num_cached[i] = out.num_cached_tokens
        builder = self.builders.get(i)
        if builder is None:
            builder = self.builders[i] = ChoiceBuilder(self.ctx.engine.tokenizer, self.body)
            builder.set_prompt(out.prompt, out.prompt_token_ids, out.prompt_logprobs)
            self.num_prompt += len(out.prompt_token_ids)
        chunks = []
        for c in out.outputs:
            index = i * self.n + c.index
            with_prompt = self.body.echo and index not in self.echoed
            self.echoed.add(index)
            self.num_generated += len(c.token_ids)
            if c.text or c.token_ids or with_prompt:
                offset = self.offsets.get(index, 0)
                choice = builder.build(index, c, with_prompt, offset)
                choice.finish_reason = None  # the finish has a chunk of its own
                lp = choice.logprobs
                self.offsets[index] = lp.text_offset[-1] + len(lp.tokens[-1]) if lp and lp.tokens else offset
                chunks.append(self.chunk([choice]))
            if c.finish_reason is not None:
                finish = CompletionChoice(index=index, text="", logprobs=None, finish_reason=c.finish_reason)
                chunks.append(self.chunk([finish]))
        return chunks
