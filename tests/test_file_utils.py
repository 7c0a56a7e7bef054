"""Tests for neuron_explainer.file_utils, against a real local HTTP server (offline)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tqdm import tqdm

from neuron_explainer import file_utils
from neuron_explainer.file_utils import FetchError

if TYPE_CHECKING:
    # conftest is not importable as a package module at runtime; the types are enough here.
    from conftest import LocalHTTPServer, RouteHandler


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache dir, so tests never touch (or depend on) the user's real cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(file_utils.CACHE_ENV_VAR, str(cache))
    return cache


def _serve(server: LocalHTTPServer, relative_path: str, data: bytes) -> str:
    path = server.root / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return server.url_for(relative_path)


def _closed_port() -> int:
    # Bind and release a port: nothing listens there afterwards, so connecting is refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _truncated_body(declared: int, sent: int) -> RouteHandler:
    def handler(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        h.wfile.write(b"x" * sent)
        h.wfile.flush()
        h.close_connection = True  # Hang up with the body incomplete.

    return handler


def test_cache_dir_env_override(cache: Path) -> None:
    assert file_utils.cache_dir() == cache


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(file_utils.CACHE_ENV_VAR, raising=False)
    assert "neuron_explainer" in str(file_utils.cache_dir())


def test_download_then_cached_without_network(http_server: LocalHTTPServer, cache: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # Several chunks.
    url = _serve(http_server, "models/gpt2/config.bin", data)

    path = file_utils.fetch(url, progress=False)
    assert path.read_bytes() == data
    assert path.is_relative_to(cache)
    assert http_server.requests["models/gpt2/config.bin"] == 1

    # Second fetch: served from the cache, no request at all (not even HEAD).
    again = file_utils.fetch(url, expected_size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert again == path
    assert http_server.total_requests == 1
    # No temp files left behind.
    assert _files_under(cache) == [path]


def test_cached_file_used_even_if_server_gone(http_server: LocalHTTPServer, cache: Path) -> None:
    url = _serve(http_server, "a.json", b'{"x": 1}')
    assert file_utils.read_json(url) == {"x": 1}
    http_server.close()
    assert file_utils.read_json(url) == {"x": 1}
    assert file_utils.read_bytes(url) == b'{"x": 1}'
    assert file_utils.exists(url)


def test_cached_file_with_wrong_hash_is_redownloaded(
    http_server: LocalHTTPServer, cache: Path
) -> None:
    data = b"good data"
    url = _serve(http_server, "f.bin", data)
    target = file_utils.cache_path(url)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupt!!")  # Same size, different content.
    path = file_utils.fetch(url, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert http_server.requests["f.bin"] == 1


def test_size_mismatch(http_server: LocalHTTPServer, cache: Path) -> None:
    url = _serve(http_server, "f.bin", b"12345")
    with pytest.raises(FetchError, match="expected 6") as e:
        file_utils.fetch(url, expected_size=6, progress=False)
    assert "\n" not in str(e.value)
    assert not file_utils.cache_path(url).exists()
    assert _files_under(cache) == []


def test_sha256_mismatch(http_server: LocalHTTPServer, cache: Path) -> None:
    url = _serve(http_server, "f.bin", b"12345")
    with pytest.raises(FetchError, match="sha256") as e:
        file_utils.fetch(url, sha256="0" * 64, progress=False)
    assert "\n" not in str(e.value)
    assert not file_utils.cache_path(url).exists()
    assert _files_under(cache) == []


def test_404(http_server: LocalHTTPServer, cache: Path) -> None:
    url = http_server.url_for("missing/config.json")
    with pytest.raises(FetchError, match="404 not found") as e:
        file_utils.fetch(url, progress=False)
    message = str(e.value)
    assert "\n" not in message
    assert url in message
    assert _files_under(cache) == []
    assert not file_utils.exists(url)


def test_404_with_hint(http_server: LocalHTTPServer, cache: Path) -> None:
    with pytest.raises(FetchError) as e:
        file_utils.fetch(http_server.url_for("nope"), hint="use --foo")
    assert str(e.value).endswith(": use --foo")


def test_unreachable_host(cache: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/x/config.json"
    hint = "pass a local folder instead, e.g. --model-path /path/to/model"
    with pytest.raises(FetchError) as e:
        file_utils.fetch(url, hint=hint, progress=False)
    message = str(e.value)
    assert "\n" not in message
    assert "no network" in message
    assert url in message
    assert message.endswith(hint)
    assert _files_under(cache) == []
    assert not file_utils.exists(url)


def test_unreachable_host_default_hint(cache: Path) -> None:
    with pytest.raises(FetchError, match="local path"):
        file_utils.fetch(f"http://127.0.0.1:{_closed_port()}/x", progress=False)


def test_interrupted_download_leaves_no_file(http_server: LocalHTTPServer, cache: Path) -> None:
    http_server.add_route("big.bin", _truncated_body(declared=1_000_000, sent=1000))
    url = http_server.url_for("big.bin")
    with pytest.raises(FetchError) as e:
        file_utils.fetch(url, progress=False)
    assert "\n" not in str(e.value)
    assert not file_utils.cache_path(url).exists()
    assert _files_under(cache) == []  # Neither the final file nor a temp file.


def test_keyboard_interrupt_leaves_no_file(
    http_server: LocalHTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _serve(http_server, "f.bin", b"x" * 100)

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        file_utils.fetch(url, progress=False)
    assert _files_under(cache) == []


def test_http_500(http_server: LocalHTTPServer, cache: Path) -> None:
    http_server.add_route("err", lambda h: h.send_error(500))
    with pytest.raises(FetchError, match="HTTP 500"):
        file_utils.fetch(http_server.url_for("err"), progress=False)
    assert _files_under(cache) == []


def test_redirect_is_followed(http_server: LocalHTTPServer, cache: Path) -> None:
    target_url = _serve(http_server, "real.txt", b"hello")

    def redirect(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", target_url)
        h.send_header("Content-Length", "0")
        h.end_headers()

    http_server.add_route("alias.txt", redirect)
    path = file_utils.fetch(http_server.url_for("alias.txt"), progress=False)
    assert path.read_bytes() == b"hello"
    assert path == file_utils.cache_path(http_server.url_for("alias.txt"))


@pytest.mark.parametrize(
    "url_path",
    [
        "/../../../etc/passwd",
        "/a/../../../../etc/passwd",
        "/a/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/a/..%2f..%2f..%2fetc%2fpasswd",
        "/a/..%5c..%5c..%5cetc%5cpasswd",
        "/",
        "",
    ],
)
def test_cache_path_cannot_escape(cache: Path, url_path: str) -> None:
    path = file_utils.cache_path(f"http://example.com{url_path}")
    resolved = Path(os.path.normpath(path))
    assert resolved.is_relative_to(cache / "example.com")
    assert ".." not in path.parts


def test_dotdot_url_download_stays_in_cache(http_server: LocalHTTPServer, cache: Path) -> None:
    _serve(http_server, "etc/passwd", b"served")
    url = http_server.base_url + "/a/%2e%2e/%2e%2e/etc/passwd"
    path = file_utils.fetch(url, progress=False)
    assert path.read_bytes() == b"served"
    assert os.path.normpath(path).startswith(str(cache) + os.sep)


def test_cache_path_layout(cache: Path) -> None:
    assert (
        file_utils.cache_path("https://Example.com/a/b.json")
        == cache / "example.com" / "a" / "b.json"
    )
    assert file_utils.cache_path("http://h:8080/x") == cache / "h_8080" / "x"
    # Queries are distinct files.
    assert file_utils.cache_path("http://h/x?a=1") != file_utils.cache_path("http://h/x?a=2")
    with pytest.raises(FetchError):
        file_utils.cache_path("http:///nohost")


def test_local_path(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text('{"a": [1, 2]}')
    assert file_utils.fetch(str(f)) == f
    assert file_utils.fetch(f) == f
    assert file_utils.fetch(f.as_uri()) == f
    assert file_utils.read_json(str(f)) == {"a": [1, 2]}
    assert file_utils.exists(str(f))
    assert file_utils.fetch(str(f), expected_size=f.stat().st_size) == f
    with pytest.raises(FetchError, match="bytes"):
        file_utils.fetch(str(f), expected_size=1)
    assert _files_under(cache) == []


def test_local_path_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config.json"
    with pytest.raises(FetchError, match="not found") as e:
        file_utils.fetch(str(missing))
    assert "\n" not in str(e.value)
    assert str(missing) in str(e.value)
    with pytest.raises(FetchError, match="use --model-path"):
        file_utils.fetch(str(missing), hint="use --model-path")
    assert not file_utils.exists(str(missing))


def test_unsupported_scheme() -> None:
    with pytest.raises(FetchError, match="not supported"):
        file_utils.fetch("s3://bucket/key")


def test_read_json_invalid(http_server: LocalHTTPServer, cache: Path) -> None:
    url = _serve(http_server, "bad.json", b"{not json")
    with pytest.raises(FetchError, match="not valid JSON") as e:
        file_utils.read_json(url, progress=False)
    assert "\n" not in str(e.value)


def test_exists_uses_head(http_server: LocalHTTPServer, cache: Path) -> None:
    url = _serve(http_server, "d/config.json", json.dumps({}).encode())
    assert file_utils.exists(url)
    assert http_server.request_log == [("HEAD", "d/config.json")]
    assert not file_utils.cache_path(url).exists()  # HEAD does not populate the cache.
    assert not file_utils.exists(http_server.url_for("d/other.json"))


def test_join() -> None:
    assert file_utils.join("https://h/a", "b", "c.json") == "https://h/a/b/c.json"
    assert file_utils.join("https://h/a/", "/b/", "c.json") == "https://h/a/b/c.json"
    assert file_utils.join("https://h/a", "") == "https://h/a"
    assert file_utils.join("az://acct/cont", "x") == "az://acct/cont/x"
    assert file_utils.join("/tmp/a", "b", "c.json") == os.path.join("/tmp/a", "b", "c.json")
    assert file_utils.join(Path("/tmp/a"), "b") == os.path.join("/tmp/a", "b")


def test_az_urls_map_to_blob_storage(cache: Path) -> None:
    assert file_utils.is_url("az://openaipublic/neuron-explainer/x.json")
    assert file_utils.cache_path("az://openaipublic/neuron-explainer/x.json") == (
        cache / "openaipublic.blob.core.windows.net" / "neuron-explainer" / "x.json"
    )


def test_atomic_write_bytes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    file_utils.atomic_write_bytes(target, b"one")
    file_utils.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert _files_under(tmp_path) == [target]


def test_atomic_write_bytes_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        file_utils.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert _files_under(tmp_path) == [target]


def test_fetch_error_is_one_line() -> None:
    e = FetchError("could not\n do x", "try\ny")
    assert str(e) == "could not do x: try y"
    assert isinstance(e, RuntimeError)
