"""POST /v1/embeddings: inputs -> token ids (in a worker thread) -> one engine request each, all admitted together so
that they share the engine's steps with every other client's -> vectors in input order. No HTTP here."""

from __future__ import annotations

import asyncio
import uuid

from ..tokenizer import Tokenizer
from .context import ServerContext
from .embedding_protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage


async def embedding(ctx: ServerContext, body: EmbeddingRequest) -> EmbeddingResponse:
    ctx.check_model(body.model)
    inputs = body.inputs()
    ctx.limits.check_embedding(len(inputs))
    engine = ctx.engine
    ids = await asyncio.to_thread(_token_ids, engine.tokenizer, inputs)
    ctx.limits.check_tokens(map(len, ids), param="input", noun="input tokens")
    request_id = f"embd-{uuid.uuid4().hex}"
    streams = await engine.add_embed_requests(ids, [f"{request_id}-{i}" for i in range(len(ids))], body.dimensions)
    try:
        outputs = await asyncio.gather(*(anext(stream) for stream in streams))
    finally:
        for stream in streams:  # a no-op for the finished ones; frees the others' blocks when the client left
            stream.abort()
    data = [EmbeddingData.of(i, out.outputs.embedding, body.encoding_format) for i, out in enumerate(outputs)]
    tokens = sum(map(len, ids))
    return EmbeddingResponse(
        data=data, model=ctx.model_name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


def _token_ids(tokenizer: Tokenizer, inputs: list[str | list[int]]) -> list[list[int]]:
    return [tokenizer.encode(text) if isinstance(text, str) else list(text) for text in inputs]
