"""The routes of Anthropic's Messages API: POST /v1/messages (a Message, or its events when stream is true) and
POST /v1/messages/count_tokens. Errors leave in Anthropic's shape (server/errors.py picks it by the path)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..event_stream import translated_events
from ..http_edge import SSEResponse, parse_body, until_disconnect
from ..model_registry import ModelRegistry
from ..serving_chat import chat_completion, chat_prompt
from ..streaming import ChunkStream
from .convert import chat_request, message_of
from .events import MessageEvents
from .protocol import CountTokensRequest, MessagesRequest


async def create_message(models: ModelRegistry, raw: Request) -> Response:
    body = chat_request(await parse_body(raw, MessagesRequest))
    ctx = await models.context(body.model)
    result = await until_disconnect(raw, chat_completion(ctx, body))
    if isinstance(result, ChunkStream):
        events = MessageEvents(ctx.response_model(body.model), result.num_prompt_tokens or 0)
        return SSEResponse(translated_events(result, events), on_close=result.abort)
    return JSONResponse(message_of(result))


async def count_tokens(models: ModelRegistry, raw: Request) -> JSONResponse:
    body = chat_request(await parse_body(raw, CountTokensRequest))
    _, prompt, _ = await chat_prompt(await models.context(body.model), body)
    return JSONResponse({"input_tokens": len(prompt)})
