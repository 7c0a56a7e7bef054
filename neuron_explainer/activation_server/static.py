"""Serving the built neuron viewer (`neuron_viewer/dist`) from the activation server.

`mount_viewer(app, dist)` adds, after the API routes:
- `GET /assets/...` and the other files of the build, as they are (hashed assets cached long);
- `GET /` to a browser (an `Accept` that includes text/html): the app's index.html; other
  clients still get the API's JSON greeting;
- every other GET that is not an API route and names no file (`/<model>/tdb`,
  `/<model>/mlp_neuron/1/2`): index.html, so the app's own router shows the page. A missing
  file with an extension (`/favicon.png`) is a JSON 404, like the API's.
API routes keep their answers: a GET to a POST-only route is still a 405, and the OpenAPI
document does not change. With no build (no index.html) nothing is mounted and a line is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Scope

log = logging.getLogger("neuron_explainer.activation_server")

DEFAULT_DIST = Path(__file__).resolve().parents[2] / "neuron_viewer" / "dist"
_NO_CACHE = {"Cache-Control": "no-cache"}
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def _wants_html(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"accept":
            return b"text/html" in value
    return False


class _BrowserRoot(Route):
    """`GET /` for browsers only; any other client falls through to the API's `/`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match != Match.NONE and not _wants_html(scope):
            return Match.NONE, {}
        return match, child


class _ViewerFallback(Route):
    """Any GET path that no other route of the app answers, whatever its method: API paths
    keep their own 404 / 405."""

    def __init__(self, app: FastAPI, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__("/{path:path}", endpoint, methods=["GET", "HEAD"], include_in_schema=False)
        self._app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match == Match.NONE:
            return match, child
        for route in self._app.router.routes:
            if isinstance(route, _ViewerFallback | _BrowserRoot):
                continue
            if route.matches(scope)[0] != Match.NONE:  # FULL, or PARTIAL (another method)
                return Match.NONE, {}
        return match, child


def mount_viewer(app: FastAPI, dist: Path = DEFAULT_DIST) -> bool:
    """Serve the viewer built in `dist` from `app`; True when mounted (False: no build there).
    Call it after every API route is added. Calling it twice mounts once."""
    dist = Path(dist).resolve()
    index = dist / "index.html"
    if getattr(app.state, "viewer_dist", None) is not None:
        return True
    if not index.is_file():
        log.info(
            "no viewer build at %s: serving the API only (build it: cd neuron_viewer && npm run build)",
            dist,
        )
        return False
    app.state.viewer_dist = dist

    def index_response() -> Response:
        return FileResponse(index, media_type="text/html", headers=_NO_CACHE)

    async def browser_root(request: Request) -> Response:
        return index_response()

    def not_found(rel: str) -> Response:
        return JSONResponse({"message": f"not found: /{rel[:200]}"}, status_code=404)

    async def viewer(request: Request) -> Response:
        rel = request.path_params["path"]
        if "\x00" in rel:  # no file has it; the file system calls would raise
            return not_found(rel.replace("\x00", "\\0"))
        try:
            target = (dist / rel).resolve()
            found = bool(rel) and target.is_relative_to(dist) and target.is_file()
        except (OSError, ValueError):  # a name too long, a loop of links...
            return not_found(rel)
        if found:
            cached = rel.startswith("assets/")
            return FileResponse(target, headers=_IMMUTABLE if cached else _NO_CACHE)
        if "." in rel.rsplit("/", 1)[-1]:
            return not_found(rel)
        return index_response()

    # `/` goes before the API's JSON greeting (browsers only); the fallback goes last.
    app.router.routes.insert(
        0, _BrowserRoot("/", browser_root, methods=["GET", "HEAD"], include_in_schema=False)
    )
    app.router.routes.append(_ViewerFallback(app, viewer))
    log.info("serving the viewer from %s", dist)
    return True
