"""Every failure leaves the server as an OpenAI error body: {"error": {"message", "type", "param", "code"}} (on
Anthropic's routes, Anthropic's body)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine.async_engine import EngineDeadError
from ..errors import GenerationError, LimitExceededError, MistralpyError, UnknownModelError
from .anthropic.errors import anthropic_body, is_anthropic_route
from .responses import ErrorInfo, ErrorResponse

__all__ = ["APIError", "ClientDisconnected", "error_body", "error_response", "exception_handlers", "status_of"]


class ClientDisconnected(Exception):
    """The client went away before its response was ready: nobody is left to answer."""


class APIError(Exception):
    """An error with its HTTP status, raised by route code (unknown model, missing API key...)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code)).model_dump()


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, path: str | None = None
) -> JSONResponse:
    """OpenAI's error body, or Anthropic's on its routes (`path`: the request's)."""
    if path is not None and is_anthropic_route(path):
        return JSONResponse(anthropic_body(status, message), status_code=status)
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def status_of(error: BaseException) -> tuple[int, str]:
    """The status and message an error raised during generation is answered with (a stream's error event too)."""
    if isinstance(error, EngineDeadError):
        return 503, str(error)
    if isinstance(error, GenerationError):
        return 500, str(error)
    if isinstance(error, MistralpyError):
        return 400, str(error)
    return 500, "internal server error; see the server log"


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Starlette's handlers by exception class: each failure answered as an OpenAI error body (Anthropic's on its
    routes)."""
    return {
        APIError: _api,
        UnknownModelError: _unknown_model,
        LimitExceededError: _limit,
        ClientDisconnected: _gone,
        MistralpyError: _mistralpy,
        StarletteHTTPException: _http,
        Exception: _mistralpy,
    }


async def _api(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.param, exc.code, request.url.path)


async def _unknown_model(request: Request, exc: UnknownModelError) -> JSONResponse:
    return error_response(404, str(exc), "model", "model_not_found", request.url.path)


async def _limit(request: Request, exc: LimitExceededError) -> JSONResponse:
    return error_response(400, str(exc), exc.param, "limit_exceeded", request.url.path)


async def _gone(_: Request, exc: ClientDisconnected) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; it is never delivered


async def _mistralpy(request: Request, exc: Exception) -> JSONResponse:
    # for an unexpected error, Starlette re-raises after sending this: the traceback reaches the server log, never
    # the client
    status, message = status_of(exc)
    return error_response(status, message, path=request.url.path)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    response = error_response(exc.status_code, message, path=request.url.path)
    response.headers.update(exc.headers or {})
    return response
