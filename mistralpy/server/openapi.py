"""GET /openapi.json: an OpenAPI 3.1 description of the routes, with the schemas of the protocol models."""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .anthropic.protocol import CountTokensRequest, MessagesRequest
from .embedding_protocol import EmbeddingRequest, EmbeddingResponse
from .protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from .responses import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionResponse,
    DetokenizeResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenizeResponse,
)
from .responses_api.protocol import ResponsesRequest

# (path, method, summary, request body, JSON answer, SSE chunk when the request asks for a stream)
Model = type[BaseModel] | None
_OPERATIONS: tuple[tuple[str, str, str, Model, Model, Model], ...] = (
    ("/v1/chat/completions", "post", "Chat completion", ChatCompletionRequest, ChatCompletionResponse,
     ChatCompletionChunk),
    ("/v1/completions", "post", "Text completion", CompletionRequest, CompletionResponse, CompletionResponse),
    ("/v1/messages", "post", "Anthropic's Messages API (a Message, or its events)", MessagesRequest, None, None),
    ("/v1/messages/count_tokens", "post", "Anthropic's token count of a Messages request", CountTokensRequest, None,
     None),
    ("/v1/responses", "post", "OpenAI's Responses API (a Response, its events, or a background run)",
     ResponsesRequest, None, None),
    ("/v1/responses/{response_id}", "get", "A stored response", None, None, None),
    ("/v1/responses/{response_id}", "delete", "Delete a stored response", None, None, None),
    ("/v1/responses/{response_id}/cancel", "post", "Cancel a background response", None, None, None),
    ("/v1/embeddings", "post", "Embedding vectors of texts or token ids", EmbeddingRequest, EmbeddingResponse, None),
    ("/v1/models", "get", "The served model", None, ModelList, None),
    ("/v1/models/{model_id}", "get", "One model", None, ModelCard, None),
    ("/tokenize", "post", "Text or chat messages to token ids", TokenizeRequest, TokenizeResponse, None),
    ("/detokenize", "post", "Token ids to text", DetokenizeRequest, DetokenizeResponse, None),
    ("/health", "get", "200 once the model is loaded and the engine loop answers", None, None, None),
    ("/version", "get", "The server's version", None, None, None),
    ("/metrics", "get", "Prometheus metrics", None, None, None),
)  # fmt: skip
_REF = "#/components/schemas/{model}"


@functools.cache
def openapi_document(version: str) -> dict[str, Any]:
    inputs = {op[3] for op in _OPERATIONS if op[3]}
    outputs = {model for op in _OPERATIONS for model in op[4:] if model} | {ErrorResponse}
    models = [(m, "validation") for m in inputs] + [(m, "serialization") for m in outputs]
    refs, defs = models_json_schema(sorted(models, key=lambda m: m[0].__name__), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for path, method, summary, request, answer, chunk in _OPERATIONS:
        operation: dict[str, Any] = {"summary": summary, "responses": {"200": _ok(answer, chunk, refs)}}
        if request is not None:
            body = {"application/json": {"schema": refs[request, "validation"]}}
            operation["requestBody"] = {"required": True, "content": body}
            operation["responses"]["400"] = _error(refs, "Invalid request")
        names = re.findall(r"{(\w+)}", path)
        if names:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names
            ]
        operation["responses"]["503"] = _error(refs, "The model is still loading, or the engine stopped")
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mistralpy", "version": version},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }


def _ok(answer: Model, chunk: Model, refs: dict) -> dict[str, Any]:
    if answer is None:
        return {"description": "OK"}
    content = {"application/json": {"schema": refs[answer, "serialization"]}}
    if chunk is not None:  # each event is "data: <chunk JSON>", then "data: [DONE]"
        content["text/event-stream"] = {"schema": refs[chunk, "serialization"]}
    return {"description": "OK", "content": content}


def _error(refs: dict, description: str) -> dict[str, Any]:
    schema = refs[ErrorResponse, "serialization"]
    return {"description": description, "content": {"application/json": {"schema": schema}}}
