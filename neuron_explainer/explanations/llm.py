"""An async client for OpenAI-compatible LLM endpoints (chat and legacy completions), on the
official `openai` SDK.

Works against OpenAI itself and against local servers that speak the same API (vLLM,
llama.cpp's server, Ollama's /v1). Configuration, in order of precedence:

- base URL: the `base_url` argument (e.g. `--llm-base-url`), else `$OPENAI_BASE_URL`, else
  OpenAI's own `https://api.openai.com/v1` when an API key is set, else nothing is configured;
- API key: the `api_key` argument, else `$OPENAI_API_KEY`; optional for local servers;
- model: the `model` argument (e.g. `--explainer-model`), else `$NEURON_EXPLAINER_LLM_MODEL`,
  else `gpt-4o` on OpenAI, else the first model the server lists at `GET /models`.

Behaviour:

- at most `max_concurrent` requests are in flight at once (per event loop);
- the SDK retries 408, 409, 429, 5xx, timeouts and connection errors (`max_retries` times) with
  its jittered exponential backoff, honouring `Retry-After`; any other 4xx fails at once with
  `LLMRequestError`;
- rate-limit pacing: a 429 or 503 with `Retry-After` pauses *every* request of the client (on
  that event loop) until then, not just the one retried, so a batch of concurrent requests
  backs off together instead of hammering a rate-limited endpoint;
- successful responses are cached on disk, keyed by endpoint and request body (never by key),
  so that repeating a request costs nothing;
- the API key is never logged, never put in an exception message and never returned;
- an error answer is summarised in exceptions (what its status means, its error code), never
  echoed: the endpoint's own words go to the log only.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import re
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from neuron_explainer.file_utils import atomic_write_bytes, cache_dir

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o"
MODEL_ENV_VAR = "NEURON_EXPLAINER_LLM_MODEL"
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
PACED_STATUS = frozenset({429, 503})

__all__ = [
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMNotConfigured",
    "LLMRequestError",
    "chat_text",
]


class LLMError(RuntimeError):
    """An LLM request failed (after retries where retrying made sense)."""


class LLMRequestError(LLMError):
    """The endpoint rejected the request itself (a 4xx other than 429): not retried."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"LLM endpoint answered HTTP {status}: {message}")


class LLMNotConfigured(LLMError):
    """No LLM endpoint is configured (no base URL and no API key)."""


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to reach the LLM. `api_key` is kept out of repr()."""

    base_url: str
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_concurrent: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    max_pause_s: float = 60.0  # longest Retry-After pause honoured for every request
    # None: no on-disk response cache.
    cache_dir: Path | None = None

    @classmethod
    def resolve(
        cls,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        cache: bool | Path = True,
        **kwargs: Any,
    ) -> LLMConfig | None:
        """The configuration from arguments, else the environment; None if nothing is set.

        `cache`: True for the default folder (`<download cache>/llm_responses`), a path for
        another folder, False for no cache.
        """
        env = os.environ if env is None else env
        api_key = api_key or env.get("OPENAI_API_KEY") or None
        base_url = base_url or env.get("OPENAI_BASE_URL") or None
        if base_url is None:
            if api_key is None:
                return None
            base_url = OPENAI_BASE_URL
        base_url = base_url.rstrip("/")
        model = model or env.get(MODEL_ENV_VAR) or None
        if model is None and base_url.startswith("https://api.openai.com"):
            model = DEFAULT_OPENAI_MODEL
        if cache is True:
            cache_folder: Path | None = cache_dir() / "llm_responses"
        elif cache is False:
            cache_folder = None
        else:
            cache_folder = Path(cache)
        return cls(
            base_url=base_url, model=model, api_key=api_key, cache_dir=cache_folder, **kwargs
        )


def chat_text(response: Mapping[str, Any], choice: int = 0) -> str:
    """The text of one choice of a chat-completions response ('' when absent)."""
    try:
        content = response["choices"][choice]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


class _Pacer:
    """Holds every request back until a rate-limited endpoint's `Retry-After` has passed."""

    def __init__(self, max_pause_s: float) -> None:
        self.max_pause_s = max_pause_s
        self.resume_at = 0.0  # time.monotonic()

    async def wait(self) -> None:
        while (delay := self.resume_at - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    def pause(self, seconds: float) -> None:
        self.resume_at = max(self.resume_at, time.monotonic() + min(seconds, self.max_pause_s))


class LLMClient:
    """Async client for one endpoint and model; safe to share between tasks and requests."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self._model: str | None = config.model
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._model_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pacer] = (
            weakref.WeakKeyDictionary()
        )
        # What the endpoint was found to support (e.g. "prompt_logprobs"), asked once.
        self.capabilities: dict[str, bool] = {}
        # Counters, for tests and progress reports: HTTP attempts, cache hits, pauses.
        self.requests_sent = 0
        self.cache_hits = 0
        self.pauses = 0

    @classmethod
    def from_env(cls, **kwargs: Any) -> LLMClient | None:
        """A client for `LLMConfig.resolve(**kwargs)`, or None when nothing is configured."""
        config = LLMConfig.resolve(**kwargs)
        return None if config is None else cls(config)

    def __repr__(self) -> str:
        return f"LLMClient({self.describe()})"

    def describe(self) -> str:
        """'model at base_url' (never the key)."""
        return f"{self._model or '<first listed model>'} at {self.config.base_url}"

    @property
    def model(self) -> str | None:
        """The model name, once known (see the module docstring)."""
        return self._model

    # ------------------------------------------------------------------ public API

    async def resolve_model(self) -> str:
        """The model name, asking the server (`GET /models`) if none was configured."""
        return await self._resolve_model()

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        """POST /chat/completions with `messages` and extra body fields `params`."""
        return await self.request("chat/completions", {"messages": messages, **params})

    async def complete(self, prompt: str, **params: Any) -> dict[str, Any]:
        """POST /completions (the legacy endpoint, which can echo prompt logprobs)."""
        return await self.request("completions", {"prompt": prompt, **params})

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` (plus the model) to `<base_url>/<path>`; cached, limited and retried."""
        body = {"model": await self._resolve_model(), **body}
        key = self._cache_key(path, body)
        cached = self._cache_read(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        response = await self._post(path, body)
        self._cache_write(key, response)
        return response

    # ------------------------------------------------------------------ internals

    def _loop_local(self, table: Any, make: Any) -> Any:
        loop = asyncio.get_running_loop()
        value = table.get(loop)
        if value is None:
            value = table[loop] = make()
        return value

    def _semaphore(self) -> asyncio.Semaphore:
        return self._loop_local(
            self._semaphores, lambda: asyncio.Semaphore(max(1, self.config.max_concurrent))
        )

    def _pacer(self) -> _Pacer:
        return self._loop_local(self._pacers, lambda: _Pacer(self.config.max_pause_s))

    def _sdk(self) -> openai.AsyncOpenAI:
        """An SDK client for this request: one per request, so it never outlives its event
        loop (the routes, the batch command and tests each run their own)."""
        pacer = self._pacer()

        async def before(request: Any) -> None:
            await pacer.wait()
            self.requests_sent += 1

        async def after(response: Any) -> None:
            status = response.status_code
            if status < 400:
                return
            await response.aread()
            if status in PACED_STATUS:
                wait = _retry_after_seconds(response.headers)
                if wait is not None and wait > 0:
                    pacer.pause(wait)
                    self.pauses += 1
            if status in RETRYABLE_STATUS:
                self._error_message(response)  # logs what the endpoint said (it will retry)

        return openai.AsyncOpenAI(
            api_key=self.config.api_key or "unused",
            base_url=self.config.base_url,
            max_retries=self.config.max_retries,
            timeout=self.config.timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(
                timeout=self.config.timeout_s,
                event_hooks={"request": [before], "response": [after]},
            ),
        )

    def _auth_headers(self) -> dict[str, Any]:
        """Local servers need no key: then no Authorization header at all."""
        return {} if self.config.api_key else {"Authorization": openai.Omit()}

    def _redact(self, text: str) -> str:
        key = self.config.api_key
        if key:
            text = text.replace(key, "***")
        return text

    def _url(self, path: str) -> str:
        return f"{self.config.base_url}/{path.lstrip('/')}"

    async def _resolve_model(self) -> str:
        if self._model is not None:
            return self._model
        lock = self._loop_local(self._model_locks, asyncio.Lock)
        async with lock:
            if self._model is None:
                self._model = await self._first_listed_model()
                log.info(
                    "LLM: using model %s (first listed at %s)", self._model, self._url("models")
                )
        return self._model

    async def _first_listed_model(self) -> str:
        url = self._url("models")
        try:
            async with self._sdk() as sdk:
                page = await sdk.models.list(extra_headers=self._auth_headers())
            return str(page.data[0].id)
        except (openai.OpenAIError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(
                self._redact(
                    f"no model given and none could be listed at {url} "
                    f"({type(exc).__name__}: {exc}); pass the model name "
                    f"(e.g. --explainer-model) or set ${MODEL_ENV_VAR}"
                )
            ) from None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self._url(path)
        attempts = self.config.max_retries + 1
        try:
            async with self._semaphore(), self._sdk() as sdk:
                data = await sdk.post(
                    "/" + path.lstrip("/"),
                    cast_to=object,
                    body=body,
                    options={"headers": self._auth_headers()},
                )
        except openai.APIStatusError as exc:
            message = self._error_message(exc.response)
            if exc.status_code in RETRYABLE_STATUS:
                raise LLMError(
                    f"LLM request to {url} failed after {attempts} attempts: "
                    f"HTTP {exc.status_code}: {message}"
                ) from None
            raise LLMRequestError(exc.status_code, message) from None
        except openai.APITimeoutError:
            raise LLMError(
                f"LLM request to {url} failed after {attempts} attempts: timed out"
            ) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise LLMError(
                self._redact(
                    f"LLM request to {url} failed after {attempts} attempts: connection error "
                    f"({type(cause).__name__}: {cause})"
                )
            ) from None
        except openai.OpenAIError as exc:  # e.g. a 200 whose body is not JSON
            raise LLMError(self._redact(f"LLM request to {url} failed: {exc}")) from None
        if not isinstance(data, dict):
            raise LLMError(f"LLM request to {url}: HTTP 200 with a body that is not a JSON object")
        return data

    def _error_message(self, response: Any) -> str:  # an httpx response (the SDK's or ours)
        """A summary of an error answer: what its status means, and the endpoint's error code
        when it gives a short one. The endpoint's own words (which may repeat our prompt, or be
        anything at all) go to the log only, redacted."""
        message: Any = None
        code: Any = None
        try:
            data = response.json()
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                message = error.get("message")
                code = error.get("code") or error.get("type")
            elif isinstance(error, str):
                message = error
            elif isinstance(data, dict):
                message = data.get("message") or data.get("detail")
        except ValueError:
            pass
        upstream = self._redact(" ".join(str(message or response.text[:300]).split()))
        log.warning("LLM endpoint answered HTTP %d: %s", response.status_code, upstream[:500])
        summary = _STATUS_SUMMARIES.get(response.status_code) or (
            "the endpoint failed" if response.status_code >= 500 else "the endpoint refused the request"
        )
        if isinstance(code, str) and _ERROR_CODE_RE.match(code):
            summary += f" (error code {code})"
        return summary

    def _cache_key(self, path: str, body: dict[str, Any]) -> str:
        blob = json.dumps(
            {"base_url": self.config.base_url, "path": path.strip("/"), "body": body},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_file(self, key: str) -> Path | None:
        root = self.config.cache_dir
        return None if root is None else root / key[:2] / f"{key}.json"

    def _cache_read(self, key: str) -> dict[str, Any] | None:
        path = self._cache_file(key)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None  # unreadable entries are simply recomputed (and overwritten)
        return data if isinstance(data, dict) else None

    def _cache_write(self, key: str, response: dict[str, Any]) -> None:
        path = self._cache_file(key)
        if path is None:
            return
        try:
            atomic_write_bytes(path, json.dumps(response, ensure_ascii=False).encode("utf-8"))
        except OSError as exc:
            log.warning("could not write the LLM response cache at %s: %s", path, exc)


_STATUS_SUMMARIES = {
    400: "the endpoint refused the request as invalid (check --explainer-model and that the "
    "endpoint speaks the OpenAI API)",
    401: "authentication failed: check the API key",
    403: "the API key may not use this model or endpoint",
    404: "not found: check --llm-base-url and --explainer-model",
    408: "the endpoint timed out",
    413: "the request was too large for the endpoint",
    422: "the endpoint could not process the request",
    429: "rate limited by the endpoint",
}
_ERROR_CODE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds a `Retry-After` (seconds or an HTTP date) or `retry-after-ms` header asks."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
