"""Every error the router answers, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

``type`` follows OpenAI's names (``invalid_request_error`` for the client's mistakes, ``authentication_error``
401, ``permission_error`` 403, ``not_found_error`` 404, ``rate_limit_error`` 429, ``server_error`` /
``service_unavailable`` 5xx); ``param`` names the offending field (a validation error's location, dotted:
``sampling_params.max_new_tokens``) or is null; ``code`` is the HTTP status. 429 and 503 carry
``Retry-After`` (seconds). Messages never name an upstream URL. The data plane (aiohttp) answers with
:func:`web_error`; on the admin app (FastAPI) :func:`install` registers the handlers that give FastAPI's
validation errors and HTTP exceptions (404, 405, the admin API's 401/403/409/422) this shape too. Both
word a validation error the same way (:func:`invalid_request`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 408: "timeout_error", 409: "conflict_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 502: "server_error", 503: "service_unavailable",
          504: "timeout_error"}


def error_body(status: int, message: str, param: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """The OpenAI-shaped error object."""
    t = kind or _TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": t, "param": param, "code": status}}


def error_response(status: int, message: str, param: str | None = None, retry_after_s: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer; ``retry_after_s`` sets ``Retry-After`` (429 and 503 answers should carry it)."""
    h = dict(headers or {})
    if retry_after_s is not None:
        h["retry-after"] = str(int(retry_after_s))
    return JSONResponse(error_body(status, message, param), status_code=status, headers=h)


def web_error(status: int, message: str, param: str | None = None, retry_after_s: int | None = None,
              headers: dict[str, str] | None = None) -> web.Response:
    """The data plane's error answer (aiohttp); as :func:`error_response`."""
    h = dict(headers or {})
    if retry_after_s is not None:
        h["retry-after"] = str(int(retry_after_s))
    h["content-type"] = "application/json"
    return web.Response(body=orjson.dumps(error_body(status, message, param)), status=status, headers=h)


def invalid_request(errs: Sequence[Any]) -> tuple[str, str | None]:
    """The message and ``param`` of a 400 for pydantic validation errors (``ValidationError.errors()``):
    the first five, each with its dotted location, and how many more."""
    first = errs[0] if errs else {}
    parts = [f"{_loc(e.get('loc')) or 'body'}: {e.get('msg')}" for e in errs[:5]]
    more = f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, _loc(first.get("loc"))


def _loc(loc: Any) -> str | None:
    parts = [str(p) for p in (loc or ()) if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = invalid_request(list(exc.errors()))
    return error_response(400, message, param)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, f"internal error: {type(exc).__name__}")


def install(app: FastAPI) -> None:
    """Answer validation errors (400, naming the field), HTTP exceptions and crashes in the OpenAI shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _crash)
