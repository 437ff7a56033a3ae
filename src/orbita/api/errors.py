"""Exception handlers: every client mistake is a 4xx with one JSON shape, never a 500.

The shape is `{"error": <code>, "message": <one line>, "problems": [...]}`; `problems` names
the item (`index`) and `field` of each invalid input so a sender can fix all of them at once.
Unexpected errors answer 500 with no internals; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from orbita.core.errors import (
    FieldProblem,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    TransientError,
    UserError,
)

log = logging.getLogger("orbita.api")

# Error codes by status for HTTPExceptions raised by the framework or by our routes.
_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An HTTP error with a stable machine-readable `code` (auth, encodings, limits)."""

    def __init__(
        self,
        *,
        status_code: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=dict(headers or {}))
        self.code = code


def error_body(
    *, code: str, message: str, problems: Sequence[FieldProblem] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if problems is not None:
        body["problems"] = [_problem(p) for p in problems]
    return body


def _problem(problem: FieldProblem) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "index": problem.index,
        "field": problem.field,
        "message": problem.message,
    }
    if problem.line is not None:
        shown["line"] = problem.line
    return shown


def json_response(
    status: int,
    body: dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


async def _invalid(_request: Request, error: Exception) -> Response:
    assert isinstance(error, InvalidInputError)
    if isinstance(error, TooLargeError):
        return json_response(
            413, error_body(code="too_large", message=str(error), problems=error.problems)
        )
    return json_response(
        400, error_body(code="invalid", message=str(error), problems=error.problems)
    )


async def _not_found(_request: Request, error: Exception) -> Response:
    return json_response(404, error_body(code="not_found", message=str(error)))


async def _user_error(_request: Request, error: Exception) -> Response:
    return json_response(400, error_body(code="bad_request", message=str(error)))


async def _transient(_request: Request, error: Exception) -> Response:
    # Segment clients retry 5xx with backoff: a brief overload loses no events.
    log.warning("transient failure: %s", type(error).__name__)
    return json_response(
        503,
        error_body(code="unavailable", message="temporarily unavailable, retry later"),
        {"Retry-After": "1"},
    )


async def _http(_request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = getattr(error, "code", None) or _CODES.get(error.status_code, "error")
    return json_response(
        error.status_code, error_body(code=code, message=str(error.detail)), error.headers
    )


async def _request_validation(_request: Request, error: Exception) -> Response:
    # Query and path parameters (limit, cursor): the same 400 shape as bodies, not FastAPI's 422.
    assert isinstance(error, RequestValidationError)
    problems = list(_validation_problems(error.errors()))
    message = "invalid request: " + "; ".join(p.describe() for p in problems[:5])
    return json_response(400, error_body(code="invalid", message=message, problems=problems))


def _validation_problems(errors: Iterable[Any]) -> Iterable[FieldProblem]:
    for item in errors:
        location = [str(part) for part in item.get("loc", ()) if part not in ("query", "path")]
        yield FieldProblem(field=".".join(location), message=str(item.get("msg", "is invalid")))


async def _unexpected(request: Request, error: Exception) -> Response:
    # Method and path only: headers may carry keys, bodies personal data. The traceback is
    # logged once, by the server, when Starlette re-raises the error after this response.
    log.error(
        "unexpected error on %s %s: %s", request.method, request.url.path, type(error).__name__
    )
    return json_response(500, error_body(code="internal", message="internal server error"))


def install_error_handlers(app: FastAPI) -> None:
    # Starlette picks the handler of the nearest class in the exception's MRO.
    app.add_exception_handler(InvalidInputError, _invalid)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(TransientError, _transient)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(Exception, _unexpected)
