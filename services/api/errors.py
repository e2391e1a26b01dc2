"""Every error the API answers, in one JSON shape: `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

import math

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """An answer other than success, with its status and a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def unauthenticated() -> ApiError:
    """No token, or one that is unknown, expired, revoked or of a disabled operator: all alike."""
    return ApiError(401, "unauthenticated", "a valid API token is required (Authorization: Bearer)")


class RateLimited(ApiError):
    """Too many bad tokens from this source: wait before trying again."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(429, "rate-limited", "too many bad tokens from here; wait and retry")
        self.wait_s = wait_s


def rate_limited(wait_s: float) -> ApiError:
    """Answered without looking at the token, for as long as the source must wait."""
    return RateLimited(wait_s)


def not_found(what: str) -> ApiError:
    """Unknown, or not granted: the same answer, so nothing is learnt by asking."""
    return ApiError(404, "not-found", f"no {what}")


def forbidden(action: str) -> ApiError:
    """A granted tenant, and a role that may not do this."""
    return ApiError(403, "forbidden", f"your role may not {action} here")


def _body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def install(app: FastAPI) -> None:
    """Answer every error in the one shape, a 500 included (without its detail)."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, math.ceil(exc.wait_s)))}
        return JSONResponse(_body(exc.code, exc.message), exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return JSONResponse(_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            _body("invalid-request", f"{where}: {first.get('msg', 'invalid')}"), 422
        )

    @app.exception_handler(DBAPIError)
    async def database(_: Request, exc: DBAPIError) -> JSONResponse:
        # A registry connection that died in the pool (no pre-ping) or a server out of reach:
        # the pool drops it, and the next request gets a new one.
        if exc.connection_invalidated or isinstance(exc.orig, OSError):
            log.warning("api.database_unavailable", error=str(exc.orig or exc)[:300])
            return JSONResponse(
                _body("unavailable", "the registry cannot be reached now; try again"), 503
            )
        log.error("api.database_error", error=str(exc.orig or exc)[:300])
        return JSONResponse(_body("internal-error", "the server failed; see its log"), 500)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(_body("internal-error", "the server failed; see its log"), 500)
