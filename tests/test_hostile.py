"""Hostile requests against the real server, as `python -m neuron_explainer.activation_server`
starts it on the bundled demo model, in a subprocess on 127.0.0.1.

Each input of issue 12 is sent while /model_info is polled: every one gets a 4xx JSON answer
with a short `message` that names what was wrong (never the input back), /model_info answers
within a second all the while, and the server's peak resident memory stays under 2 GiB. The
largest request the bounds allow (8 sub-requests of 128 tokens, k = 200) is answered too.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuron_explainer import demo
from neuron_explainer.models.tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT = 2 << 30
MODEL_INFO_LIMIT_S = 1.0
MAX_SUB_REQUESTS = 6  # the server's --max-sub-requests in these tests (the default is 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self.base = f"http://127.0.0.1:{port}"

    def peak_rss(self) -> int:
        """The server process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("wb")
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "neuron_explainer.activation_server", "--port", str(port),
         "--max-sub-requests", str(MAX_SUB_REQUESTS), "--viewer-dist", str(ROOT / "no-such-build")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    srv = Server(port, process)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "the server exited at start"
            try:
                if httpx.post(f"{srv.base}/model_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 120 s"
            time.sleep(0.2)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def while_polling(srv: Server, send: Callable[[], Any]) -> tuple[Any, float]:
    """`send()` run in a thread while /model_info is asked every 50 ms; its result and the
    slowest /model_info answer (a poll at least every 50 ms, and one after)."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(send())
        except BaseException as exc:  # re-raised below, in the test's thread
            error.append(exc)

    thread = threading.Thread(target=run)
    slowest = 0.0
    with httpx.Client(base_url=srv.base, timeout=10) as http:
        thread.start()
        while True:
            start = time.monotonic()
            r = http.post("/model_info")
            slowest = max(slowest, time.monotonic() - start)
            assert r.status_code == 200
            if not thread.is_alive():
                break
            time.sleep(0.05)
    thread.join()
    if error:
        raise error[0]
    return result[0], slowest


def post(srv: Server, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        srv.base + path,
        content=content,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=120,
    )


def check_error(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["message"], str) and body["message"]
    assert len(r.content) < 4000, f"a {len(r.content)}-byte error answer: input echoed?"
    for word in words:
        assert word in body["message"], (word, body["message"])


def raw_post(srv: Server, path: str, declared: int | None, total: int) -> tuple[int, bytes]:
    """POST a body of `total` bytes of `[1,1,1,...` over a raw socket, with Content-Length
    `declared` (None: chunked), sending no more once the server has answered."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {declared}\r\n" if declared is not None else "Transfer-Encoding: chunked\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall((head + "\r\n").encode())
        piece = b'{"datasets":[' + b"1," * 32_000
        sent = 0
        while sent < total:
            if select.select([sock], [], [], 0.05)[0]:
                break  # answered: stop sending (unread bytes would reset the connection)
            chunk = piece if declared is not None else f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


# --- the inputs ---------------------------------------------------------------------------


def tdb(**overrides: Any) -> dict[str, Any]:
    spec = {
        "prompt": "<|endoftext|>When Mary and John went to the store, John gave a drink to",
        "targetTokens": [" Mary"],
        "distractorTokens": [" John"],
        "componentTypeForMlp": "neuron",
        "componentTypeForAttention": "attention_head",
        "topAndBottomKForNodeTable": 10,
        "hideEarlyLayersWhenAblating": True,
        "nodeAblations": [],
    }
    return {**spec, **overrides}


def body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def node(node_type: str, indices: list[Any], layer: int = 1) -> dict[str, Any]:
    return {"nodeType": node_type, "tensorIndices": indices, "layerIndex": layer, "passType": "forward"}


def trace_chain(depth: int) -> bytes:
    """A /batched request tracing a head through V via `depth` nested downstream traces."""
    trace: dict[str, Any] | None = None
    for _ in range(depth):
        trace = {
            "nodeIndex": node("attention_head", [3, 1, 0], 0),
            "preOrPostAct": "pre",
            "detachLayerNormScale": True,
            "attentionTraceType": "V",
            "downstreamTraceConfig": trace,
        }
    spec = {"prompt": "<|endoftext|>Hello there, friend", "traceConfig": trace}
    return body({"inferenceSubRequests": [{"inferenceRequestSpec": spec}]})


RECORD = {"dst": "mlp_post_act", "layerIndex": 0, "activationIndex": 1}
MTK = {
    "inferenceRequestSpec": {"prompt": "<|endoftext|>Hello there"},
    "multipleTopKDerivedScalarsRequestSpec": {"dstListByGroupId": {"write_norm": []}, "topAndBottomK": 3},
}

# name: (path, body bytes, status, words the message must contain)
HOSTILE: dict[str, tuple[str, bytes, int, list[str]]] = {
    "2 MB of datasets": ("/neuron_record", b'{"datasets":[' + b"1," * 1_000_000 + b"1]}", 413, ["--max-request-bytes"]),
    "0.9 MB of datasets": (
        "/neuron_record",
        body({**RECORD, "datasets": [1] * 450_000}),
        422,
        ["datasets"],
    ),
    "0.9 MB of sub-requests": ("/batched_tdb", body({"subRequests": [1] * 450_000}), 422, ["subRequests"]),
    "deep nesting": ("/batched_tdb", b"[" * 500_000 + b"]" * 500_000, 400, ["malformed JSON", "depth"]),
    "bad UTF-8": ("/batched_tdb", b'{"subRequests": ["\xff\xfe"]}', 400, ["malformed JSON", "UTF-8"]),
    "lone surrogate": ("/batched_tdb", body({"subRequests": [tdb(prompt="\ud800")]}), 400, ["malformed JSON"]),
    "NaN": ("/batched_tdb", b'{"subRequests": [NaN]}', 400, ["malformed JSON"]),
    "truncated JSON": ("/batched_tdb", b'{"subRequests": [', 400, ["malformed JSON"]),
    "a chain of 100 downstream traces": (
        "/batched", trace_chain(100), 400, ["downstreamTraceConfig", "cannot itself trace through V"]
    ),
    "a chain of 400 downstream traces": ("/batched", trace_chain(400), 422, ["downstreamTraceConfig"]),
    "k of 10^9": (
        "/batched_tdb",
        body({"subRequests": [tdb(topAndBottomKForNodeTable=10**9)]}),
        422,
        ["topAndBottomKForNodeTable", "200"],
    ),
    "1000 sub-requests": ("/batched_tdb", body({"subRequests": [tdb()] * 1000}), 422, ["subRequests", "64"]),
    "more sub-requests than the flag": (
        "/batched_tdb",
        body({"subRequests": [tdb()] * (MAX_SUB_REQUESTS + 1)}),
        400,
        ["subRequests", "--max-sub-requests", str(MAX_SUB_REQUESTS)],
    ),
    "more tokens than the context": (
        "/batched_tdb",
        body({"subRequests": [tdb(prompt=" the" * 200)]}),
        400,
        ["prompt", "200", "128"],
    ),
    "int beyond 64 bits in an invalid field": (
        "/batched_tdb",
        b'{"subRequests": [{"prompt": 123456789012345678901234567890}]}',
        422,
        ["prompt"],
    ),
    "int beyond 64 bits in an int field": (
        "/neuron_record",
        b'{"dst": "mlp_post_act", "layerIndex": 123456789012345678901234567890, "activationIndex": 1, "datasets": ["demo"]}',
        422,
        ["layerIndex"],
    ),
    "V trace with a negative head": (
        "/batched_tdb",
        body({"subRequests": [tdb(upstreamNodeToTrace={"nodeIndex": node("attention_head", [5, 2, -1]), "attentionTraceType": "V"})]}),
        400,
        ["upstreamNodeToTrace", "tensorIndices[2]", "-1"],
    ),
    "ablation value 1e308": (
        "/batched_tdb",
        body({"subRequests": [tdb(nodeAblations=[{"nodeIndex": node("mlp_neuron", [3, 5]), "value": 1e308}])]}),
        422,
        ["value"],
    ),
    "empty group": ("/multiple_top_k_derived_scalars", body(MTK), 422, ["dstListByGroupId", "write_norm"]),
    "one index for a neuron": (
        "/batched_tdb",
        body({"subRequests": [tdb(nodeAblations=[{"nodeIndex": node("mlp_neuron", [3]), "value": 0}])]}),
        400,
        ["nodeAblations[0].nodeIndex.tensorIndices", "got 1"],
    ),
    "three indices for a neuron": (
        "/batched_tdb",
        body({"subRequests": [tdb(nodeAblations=[{"nodeIndex": node("mlp_neuron", [3, 5, 7]), "value": 0}])]}),
        400,
        ["nodeAblations[0].nodeIndex.tensorIndices", "got 3"],
    ),
    "negative token index": (
        "/batched_tdb",
        body({"subRequests": [tdb(nodeAblations=[{"nodeIndex": node("mlp_neuron", [-1, 5]), "value": 0}])]}),
        400,
        ["nodeAblations[0].nodeIndex.tensorIndices[0]", "-1"],
    ),
    "negative trace index": (
        "/batched_tdb",
        body({"subRequests": [tdb(upstreamNodeToTrace={"nodeIndex": node("mlp_neuron", [-1, 5])})]}),
        400,
        ["upstreamNodeToTrace", "tensorIndices[0]"],
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_input(server: Server, case: str) -> None:
    path, content, status, words = HOSTILE[case]
    r, slowest = while_polling(server, lambda: post(server, path, content))
    check_error(r, status, *words)
    assert slowest < MODEL_INFO_LIMIT_S, f"/model_info took {slowest:.2f} s"
    assert server.peak_rss() < PEAK_RSS_LIMIT


@pytest.mark.parametrize("declared", [50_000_000, None], ids=["content-length", "chunked"])
def test_50_mb_body_is_refused_before_it_is_read(server: Server, declared: int | None) -> None:
    (status, data), slowest = while_polling(
        server, lambda: raw_post(server, "/neuron_record", declared, 50_000_000)
    )
    assert status == 413
    assert "--max-request-bytes" in json.loads(data)["message"]
    assert slowest < MODEL_INFO_LIMIT_S
    assert server.peak_rss() < PEAK_RSS_LIMIT


def test_methods_paths_and_nul_bytes(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=10) as http:
        check_error(http.get("/batched_tdb"), 405, "Method Not Allowed")
        assert "POST" in http.get("/batched_tdb").headers["allow"]
        check_error(http.post("/no_such_route"), 404, "not found")
        check_error(http.get("/x%00y"), 404, "not found")
        check_error(http.get("/assets/%00.js"), 404, "not found")


def test_largest_request_the_bounds_allow(server: Server) -> None:
    """As many sub-requests as allowed, each a prompt of the demo model's full context, the
    node table's largest k: answered, /model_info answering meanwhile, memory bounded."""
    enc = get_tokenizer(demo.MODEL_DIR / "tokenizer")
    tokens = enc.encode("<|endoftext|>" + " the cat sat" * 100, allowed_special="all")[:128]
    prompt = enc.decode(tokens)
    assert len(enc.encode(prompt, allowed_special="all")) == 128
    for mlp, attn in (("neuron", "attention_head"), ("autoencoder_latent", "autoencoder_latent")):
        spec = tdb(
            prompt=prompt,
            targetTokens=[" the"],
            distractorTokens=[" cat"],
            componentTypeForMlp=mlp,
            componentTypeForAttention=attn,
            topAndBottomKForNodeTable=200,
        )
        request = body({"subRequests": [spec] * MAX_SUB_REQUESTS})
        r, slowest = while_polling(server, lambda request=request: post(server, "/batched_tdb", request))
        assert r.status_code == 200, r.text[:500]
        assert len(r.json()["inferenceSubResponses"]) == MAX_SUB_REQUESTS
        assert slowest < MODEL_INFO_LIMIT_S, f"/model_info took {slowest:.2f} s"
        assert server.peak_rss() < PEAK_RSS_LIMIT, server.peak_rss()
