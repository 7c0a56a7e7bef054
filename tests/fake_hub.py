"""A Hugging Face hub on the local `http_server`: the part of the hub's HTTP API that
huggingface_hub's downloads use, over files the test writes.

    HEAD/GET /{owner}/{repo}/resolve/{revision}/{path}    the file (ETag, X-Repo-Commit)
    GET      /api/models/{owner}/{repo}/revision/{rev}    repository info ("sha", "siblings")
    GET      /api/models/{owner}/{repo}/tree/{rev}[/path] file listing (snapshot_download)

Errors carry the hub's `X-Error-Code` header (RepoNotFound, EntryNotFound), which is how
huggingface_hub tells a missing file from a missing repository. Point huggingface_hub at it with
`HF_ENDPOINT=hub.endpoint`.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import urllib.parse
from pathlib import Path

from conftest import LocalHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, server: LocalHTTPServer) -> None:
        self.server = server
        self.root = server.root / "hub"
        self.root.mkdir(exist_ok=True)
        self.endpoint = server.base_url
        server.add_prefix_route("api/models/", self._api)
        server.add_prefix_route("", self._resolve)

    # ------------------------------------------------------------ content

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def add_file(self, repo_id: str, path: str, data: bytes) -> None:
        target = self.repo_dir(repo_id) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def add_folder(self, repo_id: str, folder: Path, under: str = "") -> None:
        """Copy every file of a local folder into the repository (below `under`)."""
        for file in folder.rglob("*"):
            if file.is_file():
                rel = file.relative_to(folder).as_posix()
                self.add_file(repo_id, f"{under.strip('/')}/{rel}" if under.strip("/") else rel, file.read_bytes())

    def files(self, repo_id: str) -> list[str]:
        base = self.repo_dir(repo_id)
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def downloads(self) -> list[str]:
        """Paths of the file bodies served (GET .../resolve/...), in order."""
        return [key for method, key in self.server.request_log if method == "GET" and "/resolve/" in key]

    def remove_repos(self) -> None:
        shutil.rmtree(self.root)
        self.root.mkdir()

    # ------------------------------------------------------------ protocol

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
        h.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            h.send_header(key, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _error(self, h: http.server.BaseHTTPRequestHandler, status: int, code: str) -> None:
        self._send(h, status, json.dumps({"error": code}).encode(), {"X-Error-Code": code, "X-Repo-Commit": COMMIT, "Content-Type": "application/json"})

    def _split(self, rest: str) -> tuple[str, list[str]] | None:
        parts = rest.split("/")
        if len(parts) < 2 or not self.repo_dir(f"{parts[0]}/{parts[1]}").is_dir():
            return None
        return f"{parts[0]}/{parts[1]}", parts[2:]

    def _resolve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path).lstrip("/")
        parts = path.split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self._error(h, 404, "RepoNotFound")
            return
        repo_id, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
        file = self.repo_dir(repo_id) / filename
        if not self.repo_dir(repo_id).is_dir():
            self._error(h, 401, "RepoNotFound")
        elif not file.is_file():
            self._error(h, 404, "EntryNotFound")
        else:
            data = file.read_bytes()
            etag = hashlib.sha256(data).hexdigest()
            self._send(h, 200, data, {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT, "Content-Type": "application/octet-stream"})

    def _api(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path).lstrip("/")
        found = self._split(path[len("api/models/") :])
        if found is None:
            self._error(h, 401, "RepoNotFound")
            return
        repo_id, rest = found
        if rest[:1] == ["revision"]:
            info = {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False, "siblings": [{"rfilename": f} for f in self.files(repo_id)]}
            self._send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        elif rest[:1] == ["tree"]:
            under = "/".join(rest[2:]).strip("/")
            entries = []
            for f in self.files(repo_id):
                if under and not f.startswith(under + "/"):
                    continue
                data = (self.repo_dir(repo_id) / f).read_bytes()
                entries.append({"type": "file", "path": f, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
            self._send(h, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
        else:
            self._error(h, 404, "EntryNotFound")
