"""Tests for the LLM client (`neuron_explainer.explanations.llm`) against a real local HTTP
server that speaks the chat-completions API (`FakeLLMServer`, also used by
test_explanations.py): configuration, the SDK's retries (429 / 5xx / timeouts / dropped
connections retried, other 4xx not), Retry-After pacing of every request, the concurrency
limit, the on-disk cache, and the key never leaking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from neuron_explainer.explanations.llm import (
    LLMClient,
    LLMConfig,
    LLMError,
    LLMRequestError,
    chat_text,
)

KEY = "sk-test-SECRET-1234567890"

# --------------------------------------------------------------------- the fake server

Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]
# A scripted reply: (status, JSON body[, headers]); "drop" closes the connection unanswered;
# ("sleep", seconds) answers normally after a delay.
Scripted = Reply | str | tuple[str, float]


def chat_response(*contents: str, logprobs: list[Any] | None = None) -> dict[str, Any]:
    """A chat-completions response with one choice per content."""
    choices = []
    for i, content in enumerate(contents):
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }
        if logprobs is not None:
            choice["logprobs"] = {"content": logprobs}
        choices.append(choice)
    return {"id": "chatcmpl-test", "object": "chat.completion", "choices": choices}


class FakeLLMServer:
    """A real HTTP server on 127.0.0.1 answering `POST /v1/chat/completions` and
    `POST /v1/completions` from `responder(path, body) -> (status, body)`, or first from
    `script` (a list consumed in order: see `Scripted`). `GET /v1/models` lists `model_ids`.

    Records every request (`requests`: (path, body, headers)) and the most requests ever in
    flight at once (`max_in_flight`); `delay_s` delays every answer.
    """

    def __init__(self, responder: Callable[[str, dict[str, Any]], Reply] | None = None) -> None:
        self.responder = responder or (lambda path, body: (200, chat_response("ok")))
        self.script: list[Scripted] = []
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each POST
        self.answered: list[tuple[float, int]] = []  # (time.monotonic(), status) of each answer
        self.model_ids = ["fake-model"]
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's algorithm
                # and delayed ACKs add ~40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"data": [{"id": m} for m in owner.model_ids]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("/v1/", 1)[-1]
                with owner._lock:
                    owner.arrivals.append(time.monotonic())
                    owner.requests.append(
                        (path, body, {k.title(): v for k, v in self.headers.items()})
                    )
                    scripted = owner.script.pop(0) if owner.script else None
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    if owner.delay_s:
                        time.sleep(owner.delay_s)
                    if scripted == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)  # no answer at all
                        return
                    if isinstance(scripted, tuple) and scripted[0] == "sleep":
                        time.sleep(float(scripted[1]))
                        scripted = None
                    reply: Any = scripted if scripted is not None else owner.responder(path, body)
                    with owner._lock:
                        owner.answered.append((time.monotonic(), reply[0]))
                    self._send(*reply)
                finally:
                    with owner._lock:
                        owner.in_flight -= 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def count(self, path: str | None = None) -> int:
        return sum(1 for p, _, _ in self.requests if path is None or p == path)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def fast_sdk_backoff(monkeypatch: pytest.MonkeyPatch, initial: float, most: float) -> None:
    """The openai SDK's retry delays (0.5 s doubling to 8 s), shortened for tests."""
    import openai._base_client as base

    monkeypatch.setattr(base, "INITIAL_RETRY_DELAY", initial)
    monkeypatch.setattr(base, "MAX_RETRY_DELAY", most)


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    fast_sdk_backoff(monkeypatch, 0.01, 0.05)
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()


def make_client(server: FakeLLMServer, tmp_path: Path | None = None, **kwargs: Any) -> LLMClient:
    """A client for `server`; cached under tmp_path when given."""
    options: dict[str, Any] = {
        "model": "fake-model",
        "api_key": KEY,
        "timeout_s": 5.0,
        "max_retries": 4,
    }
    options.update(kwargs)
    config = LLMConfig.resolve(
        base_url=server.base_url,
        cache=tmp_path / "llm_cache" if tmp_path else False,
        env={},
        **options,
    )
    assert config is not None
    return LLMClient(config)


MESSAGES = [{"role": "user", "content": "hello"}]

# --------------------------------------------------------------------------- config


def test_resolve_from_flags_and_environment(tmp_path: Path) -> None:
    assert LLMConfig.resolve(env={}) is None  # nothing configured
    env = {"OPENAI_API_KEY": KEY}
    config = LLMConfig.resolve(env=env, cache=False)
    assert config is not None
    assert (config.base_url, config.model, config.api_key) == (
        "https://api.openai.com/v1",
        "gpt-4o",
        KEY,
    )
    env = {"OPENAI_BASE_URL": "http://localhost:11434/v1/", "NEURON_EXPLAINER_LLM_MODEL": "llama3"}
    config = LLMConfig.resolve(env=env, cache=tmp_path)
    assert config is not None
    assert (config.base_url, config.model, config.api_key, config.cache_dir) == (
        "http://localhost:11434/v1",
        "llama3",
        None,
        tmp_path,
    )
    # OpenAI itself named by URL: its default model, not the first it lists
    config = LLMConfig.resolve(
        env={"OPENAI_BASE_URL": "https://api.openai.com/v1", "OPENAI_API_KEY": KEY}
    )
    assert config is not None and config.model == "gpt-4o"
    # flags win over the environment
    config = LLMConfig.resolve(
        base_url="http://h:1/v1", model="m", api_key="k2", env={**env, "OPENAI_API_KEY": KEY}
    )
    assert config is not None
    assert (config.base_url, config.model, config.api_key) == ("http://h:1/v1", "m", "k2")
    # the key never shows in repr / describe
    client = LLMClient(LLMConfig.resolve(api_key=KEY, env={}, cache=False))  # type: ignore[arg-type]
    assert (
        KEY not in repr(client) and KEY not in repr(client.config) and KEY not in client.describe()
    )


def test_chat_request_shape(llm_server: FakeLLMServer) -> None:
    llm_server.responder = lambda path, body: (200, chat_response("an answer"))
    client = make_client(llm_server)
    response = asyncio.run(client.chat(MESSAGES, temperature=0, max_tokens=5))
    assert chat_text(response) == "an answer"
    path, body, headers = llm_server.requests[0]
    assert path == "chat/completions"
    assert body == {"model": "fake-model", "messages": MESSAGES, "temperature": 0, "max_tokens": 5}
    assert headers["Authorization"] == f"Bearer {KEY}"


def test_no_key_sends_no_authorization(llm_server: FakeLLMServer) -> None:
    client = make_client(llm_server, api_key=None)
    asyncio.run(client.chat(MESSAGES))
    assert "Authorization" not in llm_server.requests[0][2]


def test_model_defaults_to_first_listed(llm_server: FakeLLMServer) -> None:
    llm_server.model_ids = ["local-llama", "other"]
    client = make_client(llm_server, model=None)
    asyncio.run(client.chat(MESSAGES))
    assert llm_server.requests[0][1]["model"] == "local-llama"
    assert client.model == "local-llama"


# --------------------------------------------------------------------------- retries


def test_429_and_500_are_retried(
    llm_server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    llm_server.script = [
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
        (500, {"error": {"message": "boom"}}),
        (503, "unavailable"),
    ]
    llm_server.responder = lambda path, body: (200, chat_response("finally"))
    client = make_client(llm_server)
    with caplog.at_level(logging.DEBUG):
        response = asyncio.run(client.chat(MESSAGES))
    assert chat_text(response) == "finally"
    assert llm_server.count() == 4
    assert "HTTP 429" in caplog.text and "HTTP 500" in caplog.text
    assert KEY not in caplog.text


def test_400_is_not_retried_and_key_is_redacted(
    llm_server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that (badly) echoes the key in its error must not make us leak it.
    llm_server.script = [(400, {"error": {"message": f"bad request for key {KEY}"}})]
    client = make_client(llm_server)
    with caplog.at_level(logging.WARNING), pytest.raises(LLMRequestError) as info:
        asyncio.run(client.chat(MESSAGES))
    assert info.value.status == 400
    assert "HTTP 400" in str(info.value) and KEY not in str(info.value)
    # the endpoint's own words go to the log (redacted), not into the message
    assert "bad request for key" not in str(info.value)
    assert "bad request for key" in caplog.text and KEY not in caplog.text
    assert llm_server.count() == 1


def test_error_bodies_are_summarised_not_echoed(llm_server: FakeLLMServer) -> None:
    """Whatever an endpoint answers (a huge body, our prompt back, markup), our message is a
    short summary of its status, plus its error code when that is a short identifier."""
    huge = "<html>" + "x" * 100_000 + "</html>"
    for status, body, summary in (
        (401, {"error": {"message": huge, "code": "invalid_api_key"}}, "check the API key"),
        (404, {"error": {"message": MESSAGES[0]["content"], "code": "model_not_found"}}, "not found"),
        (400, {"detail": huge}, "refused the request as invalid"),
        (418, {"error": {"message": "teapot", "code": "<script>" * 20}}, "refused the request"),
    ):
        llm_server.script = [(status, body)]
        with pytest.raises(LLMRequestError) as info:
            asyncio.run(make_client(llm_server).chat(MESSAGES))
        message = str(info.value)
        assert f"HTTP {status}" in message and summary in message, message
        assert len(message) < 300, message
        assert "xxxx" not in message and MESSAGES[0]["content"] not in message
        assert "teapot" not in message and "<script>" not in message
        if isinstance(body.get("error"), dict) and body["error"]["code"].isidentifier():
            assert body["error"]["code"] in message


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_other_4xx_are_not_retried(llm_server: FakeLLMServer, status: int) -> None:
    llm_server.script = [(status, {"error": {"message": "no"}})]
    with pytest.raises(LLMRequestError):
        asyncio.run(make_client(llm_server).chat(MESSAGES))
    assert llm_server.count() == 1


def test_gives_up_after_max_retries(llm_server: FakeLLMServer) -> None:
    llm_server.responder = lambda path, body: (502, {"error": {"message": "bad gateway"}})
    with pytest.raises(LLMError, match=r"after 3 attempts.*HTTP 502"):
        asyncio.run(make_client(llm_server, max_retries=2).chat(MESSAGES))
    assert llm_server.count() == 3


def test_dropped_connection_and_timeout_are_retried(llm_server: FakeLLMServer) -> None:
    llm_server.script = ["drop", ("sleep", 1.0)]
    llm_server.responder = lambda path, body: (200, chat_response("ok"))
    client = make_client(llm_server, timeout_s=0.3)
    assert chat_text(asyncio.run(client.chat(MESSAGES))) == "ok"
    assert llm_server.count() == 3


def test_backoff_grows_with_jitter(
    llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's backoff: doubling from its initial delay up to its maximum, jittered down by
    at most a quarter."""
    import anyio

    waits: list[float] = []
    real_sleep = anyio.sleep

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    fast_sdk_backoff(monkeypatch, 1.0, 4.0)
    monkeypatch.setattr(anyio, "sleep", record_sleep)
    llm_server.script = [(500, {})] * 4
    client = make_client(llm_server)
    asyncio.run(client.chat(MESSAGES))
    assert len(waits) == 4
    for wait, base in zip(waits, [1.0, 2.0, 4.0, 4.0], strict=True):
        assert base * 0.75 <= wait <= base


def test_retry_after_pauses_every_request(llm_server: FakeLLMServer) -> None:
    """A 429 with Retry-After: 1 holds back the other tasks' requests too, not just the one
    that is retried; then all of them go through."""
    llm_server.delay_s = 0.05
    llm_server.script = [(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})]
    client = make_client(llm_server, max_concurrent=3)

    async def many() -> list[dict[str, Any]]:
        return await asyncio.gather(
            *(client.chat([{"role": "user", "content": str(i)}]) for i in range(6))
        )

    responses = asyncio.run(many())
    assert len(responses) == 6 and llm_server.count() == 7  # 6 requests + 1 retry
    limited_at = next(t for t, status in llm_server.answered if status == 429)
    later = [t for t in llm_server.arrivals if t > limited_at]
    assert len(later) >= 3  # the retry and the requests not yet sent when it came
    assert min(later) - limited_at >= 0.9
    assert client.pauses == 1


def test_concurrency_limit(llm_server: FakeLLMServer) -> None:
    llm_server.delay_s = 0.05
    client = make_client(llm_server, max_concurrent=2)

    async def many() -> None:
        await asyncio.gather(
            *(client.chat([{"role": "user", "content": str(i)}]) for i in range(8))
        )

    asyncio.run(many())
    assert llm_server.count() == 8
    assert llm_server.max_in_flight == 2


# ----------------------------------------------------------------------------- cache


def test_cache_prevents_a_second_call(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    client = make_client(llm_server, tmp_path)
    first = asyncio.run(client.chat(MESSAGES, temperature=0))
    second = asyncio.run(client.chat(MESSAGES, temperature=0))
    assert first == second and llm_server.count() == 1 and client.cache_hits == 1
    # a new client (another process) reads the same files
    again = make_client(llm_server, tmp_path)
    assert asyncio.run(again.chat(MESSAGES, temperature=0)) == first
    assert llm_server.count() == 1
    # a different request is not a hit; neither is another model
    asyncio.run(client.chat(MESSAGES, temperature=1))
    asyncio.run(make_client(llm_server, tmp_path, model="other").chat(MESSAGES, temperature=0))
    assert llm_server.count() == 3
    # the key is in no cached file
    files = list((tmp_path / "llm_cache").rglob("*.json"))
    assert len(files) == 3
    assert all(KEY not in f.read_text() for f in files)


def test_errors_are_not_cached(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    llm_server.script = [(400, {"error": {"message": "no"}})]
    client = make_client(llm_server, tmp_path)
    with pytest.raises(LLMRequestError):
        asyncio.run(client.chat(MESSAGES))
    asyncio.run(client.chat(MESSAGES))
    assert llm_server.count() == 2


def test_cache_disabled(llm_server: FakeLLMServer) -> None:
    client = make_client(llm_server)
    asyncio.run(client.chat(MESSAGES))
    asyncio.run(client.chat(MESSAGES))
    assert llm_server.count() == 2


def test_completions_endpoint(llm_server: FakeLLMServer) -> None:
    llm_server.responder = lambda path, body: (200, {"choices": [{"text": path}]})
    response = asyncio.run(make_client(llm_server).complete("abc", max_tokens=1, echo=True))
    assert response["choices"][0]["text"] == "completions"
    assert llm_server.requests[0][1] == {
        "model": "fake-model",
        "prompt": "abc",
        "max_tokens": 1,
        "echo": True,
    }


def test_unreachable_endpoint_fails_with_a_clear_message() -> None:
    config = LLMConfig.resolve(
        base_url="http://127.0.0.1:9/v1",
        model="m",
        env={},
        cache=False,
        max_retries=1,
        timeout_s=2.0,
    )
    assert config is not None
    with pytest.raises(
        LLMError, match=re.escape("127.0.0.1:9/v1/chat/completions failed after 2 attempts")
    ):
        asyncio.run(LLMClient(config).chat(MESSAGES))
