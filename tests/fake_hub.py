"""A Hugging Face hub on the local `http_server`: the part of the hub's HTTP API that
huggingface_hub's downloads use, over files the test writes.

    HEAD/GET /{owner}/{repo}/resolve/{revision}/{path}    the file (ETag, X-Repo-Commit)
    GET      /api/models/{owner}/{repo}/revision/{rev}    repository info ("sha", "siblings")
    GET      /api/models/{owner}/{repo}/tree/{rev}[/path] file listing (snapshot_download;
                                                          ?recursive=false: direct children)
and the same for dataset repositories (what `datasets.load_dataset("owner/name")` asks) under
/datasets/{owner}/{repo}/resolve/... and /api/datasets/{owner}/{repo}[/revision|/tree/...].

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
        server.add_prefix_route("api/models/", lambda h: self._api(h, "model"))
        server.add_prefix_route("api/datasets/", lambda h: self._api(h, "dataset"))
        server.add_prefix_route("datasets/", lambda h: self._resolve(h, "dataset"))
        server.add_prefix_route("", lambda h: self._resolve(h, "model"))

    # ------------------------------------------------------------ content

    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        return self.root / repo_id if repo_type == "model" else self.root / "_datasets" / repo_id

    def add_file(self, repo_id: str, path: str, data: bytes, repo_type: str = "model") -> None:
        target = self.repo_dir(repo_id, repo_type) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def add_folder(self, repo_id: str, folder: Path, under: str = "", repo_type: str = "model") -> None:
        """Copy every file of a local folder into the repository (below `under`)."""
        for file in folder.rglob("*"):
            if file.is_file():
                rel = file.relative_to(folder).as_posix()
                path = f"{under.strip('/')}/{rel}" if under.strip("/") else rel
                self.add_file(repo_id, path, file.read_bytes(), repo_type)

    def files(self, repo_id: str, repo_type: str = "model") -> list[str]:
        base = self.repo_dir(repo_id, repo_type)
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

    def _split(self, rest: str, repo_type: str) -> tuple[str, list[str]] | None:
        parts = rest.strip("/").split("/")
        if len(parts) < 2 or not self.repo_dir(f"{parts[0]}/{parts[1]}", repo_type).is_dir():
            return None
        return f"{parts[0]}/{parts[1]}", parts[2:]

    def _resolve(self, h: http.server.BaseHTTPRequestHandler, repo_type: str) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path).lstrip("/")
        if repo_type == "dataset":
            path = path[len("datasets/") :]
        parts = path.split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self._error(h, 404, "RepoNotFound")
            return
        repo_id, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
        file = self.repo_dir(repo_id, repo_type) / filename
        if not self.repo_dir(repo_id, repo_type).is_dir():
            self._error(h, 401, "RepoNotFound")
        elif not file.is_file():
            self._error(h, 404, "EntryNotFound")
        else:
            data = file.read_bytes()
            etag = hashlib.sha256(data).hexdigest()
            self._send(h, 200, data, {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT, "Content-Type": "application/octet-stream"})

    def _api(self, h: http.server.BaseHTTPRequestHandler, repo_type: str) -> None:
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path).lstrip("/")
        found = self._split(path[len(f"api/{repo_type}s/") :], repo_type)
        if found is None:
            self._error(h, 401, "RepoNotFound")
            return
        repo_id, rest = found
        files = self.files(repo_id, repo_type)
        if rest[:1] in (["revision"], []):
            info = {"id": repo_id, "sha": COMMIT, "private": False, "siblings": [{"rfilename": f} for f in files]}
            if repo_type == "model":
                info["modelId"] = repo_id
            self._send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        elif rest[:1] == ["tree"]:
            under = "/".join(rest[2:]).strip("/")
            recursive = urllib.parse.parse_qs(url.query).get("recursive", ["true"])[0].lower() != "false"
            entries: list[dict[str, object]] = []
            folders: set[str] = set()
            for f in files:
                if under and not f.startswith(under + "/"):
                    continue
                inner = f[len(under) + 1 :] if under else f
                if not recursive and "/" in inner:  # a direct child folder, listed once
                    folders.add(f"{under}/{inner.split('/')[0]}" if under else inner.split("/")[0])
                    continue
                data = (self.repo_dir(repo_id, repo_type) / f).read_bytes()
                entries.append({"type": "file", "path": f, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
            entries += [{"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(folders)]
            self._send(h, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
        else:
            self._error(h, 404, "EntryNotFound")
