"""Every failure leaves the server as an OpenAI error body: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine.async_engine import EngineDeadError
from ..errors import LimitExceededError, MistralpyError, UnknownModelError
from .responses import ErrorInfo, ErrorResponse

__all__ = ["APIError", "ClientDisconnected", "error_body", "error_response", "exception_handlers"]


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


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Starlette's handlers by exception class: each failure answered as an OpenAI error body."""
    return {
        APIError: _api,
        UnknownModelError: _unknown_model,
        LimitExceededError: _limit,
        ClientDisconnected: _gone,
        EngineDeadError: _dead,
        MistralpyError: _mistralpy,
        StarletteHTTPException: _http,
        Exception: _unexpected,
    }


async def _api(_: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.param, exc.code)


async def _unknown_model(_: Request, exc: UnknownModelError) -> JSONResponse:
    return error_response(404, str(exc), "model", "model_not_found")


async def _limit(_: Request, exc: LimitExceededError) -> JSONResponse:
    return error_response(400, str(exc), exc.param, "limit_exceeded")


async def _gone(_: Request, exc: ClientDisconnected) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; it is never delivered


async def _dead(_: Request, exc: EngineDeadError) -> JSONResponse:
    return error_response(503, str(exc))


async def _mistralpy(_: Request, exc: MistralpyError) -> JSONResponse:
    return error_response(400, str(exc))


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return _with_headers(exc, message)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after sending this, so the traceback reaches the server log (never the client).
    return error_response(500, "internal server error; see the server log")


def _with_headers(exc: StarletteHTTPException, message: str) -> JSONResponse:
    response = error_response(exc.status_code, message)
    response.headers.update(exc.headers or {})
    return response
