"""The built neuron viewer served by the activation server (`static.mount_viewer`), against a
fake build folder: the app's pages, its assets, and the API answering exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from neuron_explainer.activation_server.main import create_app
from neuron_explainer.activation_server.static import mount_viewer

INDEX = "<!doctype html><html><body><div id=root></div><script src=/assets/index-abc123.js></script></body></html>"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text(INDEX)
    (d / "assets" / "index-abc123.js").write_text("console.log('viewer')")
    (d / "assets" / "index-abc123.css").write_text("body{}")
    (d / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside the build")
    return d


@pytest.fixture
def client(dist: Path) -> TestClient:
    app = create_app(None)
    assert mount_viewer(app, dist)
    return TestClient(app)


@pytest.fixture
def plain() -> TestClient:
    return TestClient(create_app(None))


def is_index(r: Any) -> bool:
    return (
        r.status_code == 200
        and r.text == INDEX
        and r.headers["content-type"].startswith("text/html")
    )


def test_browser_root_is_the_app(client: TestClient) -> None:
    r = client.get("/", headers=HTML)
    assert is_index(r)
    assert r.headers["cache-control"] == "no-cache"


def test_api_clients_still_get_the_json_greeting(client: TestClient, plain: TestClient) -> None:
    for headers in ({"Accept": "application/json"}, {}):
        r = client.get("/", headers=headers)
        assert r.status_code == 200
        assert r.json() == plain.get("/").json()


@pytest.mark.parametrize(
    "path",
    [
        "/gpt2-small/tdb",
        "/gpt2-small/tdb?prompt=a&target=+b",
        "/gpt2-small/mlp_neuron/1/2",
        "/m/attention_head/0/3",
        "/nowhere",
    ],
)
def test_app_paths_get_index_html(client: TestClient, path: str) -> None:
    assert is_index(client.get(path, headers=HTML))
    assert is_index(client.get(path))  # whatever the Accept header: the app shows its own 404


def test_head_of_an_app_path(client: TestClient) -> None:
    r = client.head("/gpt2-small/tdb")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")


def test_assets_are_served_and_cached(client: TestClient) -> None:
    r = client.get("/assets/index-abc123.js")
    assert r.status_code == 200
    assert r.text == "console.log('viewer')"
    assert "javascript" in r.headers["content-type"]
    assert "immutable" in r.headers["cache-control"]
    assert client.get("/assets/index-abc123.css").headers["content-type"].startswith("text/css")
    top = client.get("/favicon.svg")
    assert top.status_code == 200 and top.text == "<svg/>"
    assert top.headers["cache-control"] == "no-cache"


def test_missing_files_are_json_404s(client: TestClient) -> None:
    for path in ("/assets/gone-123.js", "/favicon.ico"):
        r = client.get(path)
        assert r.status_code == 404
        assert "message" in r.json()


@pytest.mark.parametrize(
    "path", ["/a%00b", "/assets/%00.js", "/%00", "/gpt2-small/tdb%00", "/" + "x" * 5000 + ".js"]
)
def test_odd_paths_are_json_404s(path: str, dist: Path) -> None:
    """A NUL byte (or a name too long for the file system) is a 404, not a crash."""
    app = create_app(None)
    assert mount_viewer(app, dist)
    r = TestClient(app, raise_server_exceptions=False).get(path)
    assert r.status_code == 404, r.text
    assert r.json()["message"].startswith("not found: /") and len(r.text) < 400


def test_no_escape_from_the_build_folder(client: TestClient) -> None:
    for path in ("/..%2fsecret.txt", "/assets/..%2f..%2fsecret.txt", "/%2e%2e/secret.txt"):
        r = client.get(path)
        assert "outside the build" not in r.text
        assert r.status_code in (200, 404)  # the app's index or a 404, never the file


def test_api_routes_answer_as_before(client: TestClient, plain: TestClient) -> None:
    # a GET to a POST-only route is still the API's 405, not the app
    for path in ("/model_info", "/batched_tdb", "/neuron_record"):
        got, want = client.get(path, headers=HTML), plain.get(path, headers=HTML)
        assert (got.status_code, got.json()) == (want.status_code, want.json())
        assert got.status_code == 405
    # POSTs are untouched (no model here: 503 with a message)
    got, want = client.post("/model_info"), plain.post("/model_info")
    assert (got.status_code, got.json()) == (want.status_code, want.json())
    assert client.post("/neuron_datasets_metadata").json() == plain.post("/neuron_datasets_metadata").json()
    # the schema and the docs are the API's
    assert client.get("/openapi.json").json() == plain.get("/openapi.json").json()
    docs = client.get("/docs", headers=HTML)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert (
        client.get("/force_client_code_generation", params={"group_id": "activation"}).status_code
        == 200
    )


def test_cors_preflight_unchanged(client: TestClient) -> None:
    r = client.options(
        "/batched_tdb",
        headers={
            "Origin": "http://localhost:1234",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:1234"


def test_without_a_build_nothing_is_mounted(tmp_path: Path, plain: TestClient) -> None:
    app = create_app(None)
    n_routes = len(app.router.routes)
    assert not mount_viewer(app, tmp_path / "no-dist")
    assert len(app.router.routes) == n_routes
    c = TestClient(app)
    assert c.get("/", headers=HTML).json() == plain.get("/").json()
    assert c.get("/gpt2-small/tdb").status_code == 404


def test_mounting_twice_mounts_once(dist: Path) -> None:
    app = create_app(None)
    assert mount_viewer(app, dist)
    n_routes = len(app.router.routes)
    assert mount_viewer(app, dist)
    assert len(app.router.routes) == n_routes
    assert is_index(TestClient(app).get("/m/tdb"))
