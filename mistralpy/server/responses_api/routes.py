"""The Responses API's routes: POST /v1/responses (a Response, its events, or a background run), GET and DELETE
/v1/responses/{id}, POST /v1/responses/{id}/cancel. Stored responses live in a ResponseStore."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...errors import InvalidRequestError
from ..context import ServerContext
from ..errors import APIError, status_of
from ..event_stream import translated_events
from ..http_edge import SSEResponse, parse_body, until_disconnect
from ..model_registry import ModelRegistry
from ..serving_chat import chat_completion
from ..streaming import ChunkStream
from .convert import (
    assistant_message,
    chat_request,
    conversation,
    fail,
    finish,
    new_id,
    now,
    output_items,
    response_object,
)
from .events import ResponseEvents
from .protocol import ResponsesRequest
from .store import ResponseStore, Stored


class ResponsesRoutes:
    def __init__(self, models: ModelRegistry, store: ResponseStore | None = None) -> None:
        self.models = models  # one store for every model: response ids are the server's
        self.store = store or ResponseStore()

    async def create(self, raw: Request) -> Response:
        body = await parse_body(raw, ResponsesRequest)
        if body.background and (body.stream or not body.store):
            raise InvalidRequestError("background responses need store: true and cannot be streamed here")
        messages = conversation(body, self._earlier(body.previous_response_id))
        chat = chat_request(body, messages)
        ctx = await self.models.context(body.model)
        response = response_object(body, new_id("resp"), ctx.response_model(body.model), now())
        if body.background:
            return self._background(ctx, chat, response, messages)
        result = await until_disconnect(raw, chat_completion(ctx, chat))
        if isinstance(result, ChunkStream):
            events = ResponseEvents(response, lambda: self._keep(body, response, messages, events.items))
            return SSEResponse(translated_events(result, events), on_close=result.abort)
        items = output_items(result.choices[0])
        finish(response, items, result.choices[0].finish_reason, result.usage)
        self._keep(body, response, messages, items)
        return JSONResponse(response)

    async def get(self, raw: Request) -> JSONResponse:
        return JSONResponse(self._stored(raw).response)

    async def delete(self, raw: Request) -> JSONResponse:
        stored = self._stored(raw)
        self.store.delete(stored.response["id"])
        if stored.task is not None:
            stored.task.cancel()
        return JSONResponse({"id": stored.response["id"], "object": "response", "deleted": True})

    async def cancel(self, raw: Request) -> JSONResponse:
        stored = self._stored(raw)
        if stored.task is None:
            raise InvalidRequestError("only background responses can be cancelled")
        if not stored.task.done():
            stored.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stored.task
        return JSONResponse(stored.response)

    def _earlier(self, response_id: str | None) -> list[dict[str, Any]]:
        if response_id is None:
            return []
        stored = self.store.get(response_id)
        if stored is None:
            raise APIError(404, f"Previous response with id '{response_id}' not found.", "previous_response_id")
        if stored.response["status"] not in ("completed", "incomplete"):
            raise InvalidRequestError(f"the response '{response_id}' is {stored.response['status']}: not continued")
        return stored.messages

    def _stored(self, raw: Request) -> Stored:
        response_id = raw.path_params["response_id"]
        stored = self.store.get(response_id)
        if stored is None:
            raise APIError(404, f"Response with id '{response_id}' not found.", code="not_found")
        return stored

    def _keep(self, body: ResponsesRequest, response: dict, messages: list, items: list) -> None:
        if body.store:
            self.store.put(Stored(response, messages + [assistant_message(items)]))

    def _background(self, ctx: ServerContext, chat: Any, response: dict, messages: list) -> JSONResponse:
        response["status"] = "queued"
        stored = Stored(response, messages)
        stored.task = asyncio.create_task(self._run(ctx, chat, stored))
        self.store.put(stored)
        return JSONResponse(response)

    async def _run(self, ctx: ServerContext, chat: Any, stored: Stored) -> None:
        response = stored.response
        response["status"] = "in_progress"
        try:
            result = await chat_completion(ctx, chat)
        except asyncio.CancelledError:
            response["status"] = "cancelled"
            raise
        except Exception as error:
            fail(response, *status_of(error))
            return
        items = output_items(result.choices[0])
        finish(response, items, result.choices[0].finish_reason, result.usage)
        stored.messages = stored.messages + [assistant_message(items)]
