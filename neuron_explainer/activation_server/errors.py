"""What goes wrong, and how it looks on the wire.

Routes raise the exceptions below; `install_error_handlers` turns them, FastAPI's own errors
(validation, malformed JSON, unknown paths, wrong methods) and anything unexpected into a JSON
object with a `message` (what the original client shows). A message says what was wrong and
where, and never repeats the input back: a hostile body cannot make a huge or unencodable answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

log = logging.getLogger("neuron_explainer.activation_server")


class RequestError(ValueError):
    """The request is well-formed JSON but asks for something impossible; says which field.
    Answered with 400."""


class NotFound(LookupError):
    """The request names something this server does not have (a dataset, a node's record).
    Answered with 404."""


class ServiceUnavailable(Exception):
    """The server was started without what this route needs (a model, datasets, an LLM).
    Answered with 503."""


# --- the wire format ---------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """One validation problem: where (`loc`, as FastAPI reports it), what and its kind."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer. `detail` lists the first validation problems (422 only)."""

    message: str
    detail: list[ErrorDetail] | None = None


_DESCRIPTIONS = {
    400: "The request is malformed JSON, or asks for something this server cannot do (the "
    "message names the field)",
    404: "No registered dataset or record has what the request names",
    413: "The request body is larger than the server accepts (--max-request-bytes)",
    422: "The request does not match the schema (the message names the field)",
    503: "The server was started without what this route needs (a model, the network for "
    "published datasets, an LLM endpoint)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


# --- handlers ----------------------------------------------------------------------------

MAX_PROBLEMS = 10  # validation problems listed in one answer
_MAX_LOC_PART = 64  # characters of one path component (a dict key may be anything)
_MAX_LOC_PARTS = 16  # path components of one location


def _short(part: Any) -> str | int:
    if isinstance(part, int):
        return part
    text = str(part)
    return text if len(text) <= _MAX_LOC_PART else text[: _MAX_LOC_PART - 3] + "..."


def _validation_answer(errors: Iterable[Any]) -> tuple[int, ErrorResponse]:
    problems: list[str] = []
    details: list[ErrorDetail] = []
    n = 0
    for err in errors:
        n += 1
        if n > MAX_PROBLEMS:
            continue
        kind = str(err.get("type", "invalid"))
        if kind == "json_invalid":  # loc is ("body", character offset)
            at = [p for p in err.get("loc", ()) if p != "body"]
            reason = str((err.get("ctx") or {}).get("error", err.get("msg")))[:200]
            # malformed JSON is a 400, as any other unparseable request
            return 400, ErrorResponse(
                message=f"body: malformed JSON at character {at[0] if at else '?'}: {reason}"
            )
        loc = [_short(p) for p in err.get("loc", ())]
        if len(loc) > _MAX_LOC_PARTS:  # a deeply nested body: its start and its end
            loc = [*loc[: _MAX_LOC_PARTS // 2], "...", *loc[-_MAX_LOC_PARTS // 2 :]]
        where = ".".join(str(p) for p in loc if p != "body")
        msg = str(err.get("msg", "invalid"))[:300]
        problems.append(f"{where or 'body'}: {msg}")
        details.append(ErrorDetail(loc=loc, msg=msg, type=kind[:64]))
    if n > MAX_PROBLEMS:
        problems.append(f"and {n - MAX_PROBLEMS} more problems")
    return 422, ErrorResponse(message="; ".join(problems) or "invalid request", detail=details)


def install_error_handlers(app: FastAPI, response_class: type[Response]) -> None:
    """Answer every error of `app` as an `ErrorResponse` rendered by `response_class`."""

    def answer(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> Response:
        return response_class(body.model_dump(exclude_none=True), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return answer(*_validation_answer(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # FastAPI's and Starlette's own: unknown path (404), wrong method (405, with Allow),
        # a body that cannot be read (400)
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            detail = f"not found: {request.url.path[:200]}"
        return answer(exc.status_code, ErrorResponse(message=detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError) -> Response:
        return answer(400, ErrorResponse(message=str(exc)))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return answer(404, ErrorResponse(message=str(exc.args[0]) if exc.args else "not found"))

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> Response:
        return answer(503, ErrorResponse(message=str(exc)))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # the exception's text may name local files: it goes to the log only
        log.exception("unhandled error in %s", request.url.path)
        return answer(500, ErrorResponse(message=f"internal error ({type(exc).__name__}); see the server's log"))


def internal_error_answer(response_class: type[Response], exc: Exception, path: str) -> Response:
    """The 500 answer for an exception that escaped the routing stack."""
    log.exception("unhandled error in %s", path, exc_info=exc)
    body = ErrorResponse(message=f"internal error ({type(exc).__name__}); see the server's log")
    return response_class(body.model_dump(exclude_none=True), status_code=500)
