"""How much one request may ask of the server, enforced before the work starts.

- The body: at most `Limits.max_request_bytes` (default 1 MiB), refused with 413 before it is
  parsed (`BodyLimitMiddleware`); then parsed strictly (`StrictJSONRoute`: orjson, so deep
  nesting, bad UTF-8, lone surrogates, NaN and Infinity are malformed JSON, a 400).
- Its size in the schema: every list, map and count has a bound in `schemas` (validated before
  any work, documented as minItems / maxItems / maximum).
- Sub-requests per request and tokens per prompt: flags (`--max-sub-requests`,
  `--max-prompt-tokens`) up to the schema's bounds; `document_limits` writes the values in force
  into the OpenAPI document, so clients see the bounds this server enforces.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import ErrorResponse, RequestError

DEFAULT_MAX_REQUEST_BYTES = 1 << 20
DEFAULT_MAX_SUB_REQUESTS = 8


@dataclass(frozen=True)
class Limits:
    """The bounds one server enforces (see the module docstring)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_sub_requests: int = DEFAULT_MAX_SUB_REQUESTS
    max_prompt_tokens: int | None = None
    """None: the model's context window."""

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1:
            raise ValueError("--max-request-bytes must be at least 1")
        if not 1 <= self.max_sub_requests <= S.MAX_SUB_REQUESTS:
            raise ValueError(f"--max-sub-requests must be between 1 and {S.MAX_SUB_REQUESTS}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError("--max-prompt-tokens must be at least 1")

    def check_sub_requests(self, n: int, field: str) -> None:
        if n > self.max_sub_requests:
            raise RequestError(
                f"{field}: {n} sub-requests; this server answers at most {self.max_sub_requests} "
                "per request (--max-sub-requests)"
            )


# --- the body ----------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Refuses (413, JSON `message`) a request body over `max_bytes`: at once when its
    Content-Length says so, else as soon as the bytes read pass it. The body read (at most
    `max_bytes`) is replayed to the app, which never sees more."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = ErrorResponse(
            message=f"the request body is larger than this server accepts ({self.max_bytes} "
            "bytes; restart it with --max-request-bytes to allow more)"
        )
        response = Response(
            orjson.dumps(body.model_dump(exclude_none=True)),
            status_code=413,
            media_type="application/json",
            headers={"Connection": "close"},  # the rest of the body is not read
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI reports it as malformed
            # JSON. Unlike the standard library it refuses lone surrogates, NaN and Infinity, and
            # nesting deeper than 1024 (no RecursionError), and it parses faster.
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON bodies are parsed with orjson (see `_StrictJSONRequest`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


# --- the OpenAPI document ----------------------------------------------------------------


def document_limits(document: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """`document` (an OpenAPI dict) with the bounds in force: sub-requests per request, tokens
    per prompt and the body size."""
    schemas = document.get("components", {}).get("schemas", {})
    for model, field in (("BatchedTdbRequest", "subRequests"), ("BatchedRequest", "inferenceSubRequests")):
        prop = schemas.get(model, {}).get("properties", {}).get(field)
        if prop is not None:
            prop["maxItems"] = limits.max_sub_requests
    tokens = (
        f"at most {limits.max_prompt_tokens} tokens, and no more than the model's context"
        if limits.max_prompt_tokens is not None
        else "at most the model's context window of tokens"
    )
    for model in ("TdbRequestSpec", "InferenceRequestSpec"):
        prop = schemas.get(model, {}).get("properties", {}).get("prompt")
        if prop is not None:
            prop["description"] = f"The prompt: {tokens} (--max-prompt-tokens)."
    info = document.setdefault("info", {})
    info["description"] = (
        f"Request bodies are at most {limits.max_request_bytes} bytes (413 beyond); a request has "
        f"at most {limits.max_sub_requests} sub-requests; a prompt has {tokens}."
    )
    return document
