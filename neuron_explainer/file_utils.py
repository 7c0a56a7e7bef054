"""Read files from a local path or an http(s) URL, with an on-disk download cache.

Everything that loads published artifacts (model checkpoints, autoencoders, datasets,
explanations) goes through `fetch`, so that:

- a local folder can always be used instead of a URL (offline use);
- a URL is downloaded once and afterwards served from the cache without any network access;
- a failed or interrupted download never leaves a half-written file where the cache (or a
  later run) would mistake it for a complete one;
- every failure is a `FetchError` with a one-line message saying what failed and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import platformdirs
from tqdm import tqdm

__all__ = [
    "CACHE_ENV_VAR",
    "FetchError",
    "atomic_write_bytes",
    "cache_dir",
    "cache_path",
    "exists",
    "fetch",
    "is_url",
    "join",
    "read_bytes",
    "read_json",
]

CACHE_ENV_VAR = "NEURON_EXPLAINER_CACHE"

# Connecting should be quick; a stalled body read gets a bit longer before we give up.
_DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=30.0)
# `exists` is used for probing (e.g. "is there a config.json here?"), so fail fast.
_HEAD_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_CHUNK_SIZE = 1 << 20
# Characters that are invalid in file names on common file systems (Windows is the strictest).
_UNSAFE_CHARS = re.compile(r'[<>:"|?*\\\x00-\x1f]')


class FetchError(RuntimeError):
    """A file could not be found, downloaded or verified.

    The message is always a single line: "<what failed>: <what to do>". `hint`, when given,
    replaces the default "what to do" part, so callers can point at their own options
    (e.g. "pass a local folder instead, e.g. --model-path /path/to/model").
    """

    def __init__(self, what: str, hint: str | None = None) -> None:
        # Collapse whitespace so that multi-line messages from lower layers (httpx, OS errors)
        # cannot break the one-line promise.
        self.what = " ".join(what.split())
        self.hint = " ".join(hint.split()) if hint else None
        super().__init__(f"{self.what}: {self.hint}" if self.hint else self.what)


def cache_dir() -> Path:
    """Root of the download cache: `$NEURON_EXPLAINER_CACHE`, else the per-user cache dir."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("neuron_explainer"))


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for http:// and https:// URLs (the locations `fetch` downloads)."""
    return _normalize_location(location).lower().startswith(("http://", "https://"))


def join(location: str | os.PathLike[str], *parts: str) -> str:
    """Join a local path or a URL with relative parts.

    URLs are joined with '/' (never os.sep, which would be wrong on Windows); local paths use
    os.path.join. Empty parts are ignored.
    """
    location = os.fspath(location)
    if _has_scheme(location):
        result = location
        for part in parts:
            if not part:
                continue
            result = result.rstrip("/") + "/" + part.lstrip("/")
        return result
    return os.path.join(location, *[p for p in parts if p])


def cache_path(url: str) -> Path:
    """Where `fetch` stores the download of `url`: `cache_dir()/<host>/<url path>`.

    The path is sanitized so that no URL (e.g. with `..` segments, encoded or not) can point
    outside the cache dir.
    """
    url = _normalize_location(url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise FetchError(f"not an http(s) URL: {url}", "pass an http:// or https:// URL")
    host = (parts.hostname or "").lower()
    if parts.port is not None:
        host = f"{host}_{parts.port}"
    host = _UNSAFE_CHARS.sub("_", host)
    if host.strip(".") == "":
        raise FetchError(f"invalid URL (no host): {url}", "check the URL")

    # Decode first so that %2e%2e and %2f cannot smuggle in '..' or '/' after the checks;
    # then resolve dot segments the way a URL would, clamped at the root.
    segments: list[str] = []
    for segment in urllib.parse.unquote(parts.path).replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(_UNSAFE_CHARS.sub("_", segment))
    if not segments or parts.path.endswith("/"):
        # A URL for a "directory" still needs a file name (and must not collide with the dir).
        segments.append("_index")
    if parts.query:
        # Different queries are different files; keep the name readable but unique.
        digest = hashlib.sha256(parts.query.encode()).hexdigest()[:16]
        segments[-1] = f"{segments[-1]}_{digest}"

    root = cache_dir()
    result = root.joinpath(host, *segments)
    # Defense in depth: the cleaning above should make this impossible.
    if not os.path.normpath(result).startswith(os.path.join(os.path.normpath(root), "")):
        raise FetchError(f"refusing to cache {url} outside {root}", "check the URL")
    return result


def fetch(
    location: str | os.PathLike[str],
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    hint: str | None = None,
    progress: bool = True,
) -> Path:
    """Return a local path for `location`, downloading (once) if it is an http(s) URL.

    Local paths and file:// URLs are returned as-is (after checking they exist). URLs are
    served from the cache when a complete copy is there (and matches `expected_size` /
    `sha256` when given), without touching the network; otherwise they are downloaded.
    Raises FetchError with a one-line message on any failure; `hint` replaces its advice.
    """
    location = _normalize_location(location)
    if not is_url(location):
        return _fetch_local(location, expected_size=expected_size, sha256=sha256, hint=hint)

    target = cache_path(location)
    if target.is_file() and _matches(target, expected_size, sha256):
        return target
    _download(
        location, target, expected_size=expected_size, sha256=sha256, hint=hint, progress=progress
    )
    return target


def read_bytes(location: str | os.PathLike[str], **kwargs: Any) -> bytes:
    """Contents of a local file or (cached) URL; keyword arguments go to `fetch`."""
    path = fetch(location, **kwargs)
    try:
        return path.read_bytes()
    except OSError as e:
        raise FetchError(
            f"could not read {path} ({e})", kwargs.get("hint") or "check the file"
        ) from e


def read_json(location: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Parsed JSON from a local file or (cached) URL; keyword arguments go to `fetch`."""
    data = read_bytes(location, **kwargs)
    try:
        return json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        raise FetchError(
            f"{location} is not valid JSON ({e})",
            kwargs.get("hint") or "check that the location points at a JSON file",
        ) from e


def exists(location: str | os.PathLike[str]) -> bool:
    """True if a local path exists, a URL is cached, or the server answers HEAD with 200.

    Never raises for network problems: those mean "not available", i.e. False.
    """
    location = _normalize_location(location)
    if not is_url(location):
        try:
            return _local_path(location).exists()
        except FetchError:
            return False
    try:
        if cache_path(location).is_file():
            return True
    except FetchError:
        return False
    try:
        response = httpx.head(location, timeout=_HEAD_TIMEOUT, follow_redirects=True)
    except (httpx.HTTPError, httpx.InvalidURL, OSError):
        return False
    return response.status_code == 200


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one.

    Writes a temp file in the same folder (so os.replace is a same-filesystem rename) and
    renames it over `path`; the temp file is removed if anything goes wrong.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temp_file_for(path) as (tmp, f):
        f.write(data)
        f.flush()
        # fsync so that a crash right after the rename cannot leave an empty/garbage file.
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)


# --- internals ---------------------------------------------------------------------------


def _normalize_location(location: str | os.PathLike[str]) -> str:
    """Accept Path objects too, and map az://account/container/... to its public https URL.

    The published artifacts have historically been referred to by az:// paths.
    """
    location = os.fspath(location)
    if location.lower().startswith("az://"):
        account, _, rest = location[len("az://") :].partition("/")
        return f"https://{account}.blob.core.windows.net/{rest}"
    return location


def _has_scheme(location: str) -> bool:
    # Require "://" so that Windows paths like C:\x are not mistaken for URLs.
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location) is not None


def _local_path(location: str) -> Path:
    if location.lower().startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(location).path))
    if _has_scheme(location):
        scheme = location.split("://", 1)[0]
        raise FetchError(
            f"unsupported location {location} ({scheme}:// is not supported)",
            "use a local path or an http(s):// URL",
        )
    return Path(location).expanduser()


def _fetch_local(
    location: str, *, expected_size: int | None, sha256: str | None, hint: str | None
) -> Path:
    path = _local_path(location)
    if not path.exists():
        raise FetchError(f"file not found: {path}", hint or "check the path")
    if path.is_file() and (expected_size is not None or sha256 is not None):
        problem = _mismatch(path, expected_size, sha256)
        if problem:
            raise FetchError(
                f"{path} {problem}", hint or "the file may be corrupt or from another version"
            )
    return path


def _matches(path: Path, expected_size: int | None, sha256: str | None) -> bool:
    return _mismatch(path, expected_size, sha256) is None


def _mismatch(path: Path, expected_size: int | None, sha256: str | None) -> str | None:
    """Describe how `path` differs from the expected size / hash, or None if it matches."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"has {size} bytes, expected {expected_size}"
    if sha256 is not None:
        digest = _sha256_of(path)
        if digest.lower() != sha256.lower():
            return f"has sha256 {digest}, expected {sha256}"
    return None


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _temp_file_for(path: Path) -> Iterator[tuple[Path, IO[bytes]]]:
    """Open a uniquely named temp file next to `path`; delete it unless it was renamed away.

    Uses open(..., "xb") rather than tempfile so the file gets the usual umask-based
    permissions (mkstemp would make cached files private to the user).
    """
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        try:
            f = open(tmp, "xb")  # noqa: SIM115 -- closed in the finally below.
            break
        except FileExistsError:
            continue
    try:
        yield tmp, f
    finally:
        # BaseException included on purpose: KeyboardInterrupt must not leave temp files.
        f.close()
        tmp.unlink(missing_ok=True)


def _download(
    url: str,
    target: Path,
    *,
    expected_size: int | None,
    sha256: str | None,
    hint: str | None,
    progress: bool,
) -> None:
    """Stream `url` into `target` via a temp file; raise FetchError on any failure."""
    network_hint = hint or (
        f"check the network connection, or pass a local path instead "
        f"(downloads are cached in {cache_dir()})"
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(
            f"could not create cache folder {target.parent} ({e})",
            hint or f"set {CACHE_ENV_VAR} to a writable folder",
        ) from e

    try:
        with (
            httpx.stream("GET", url, timeout=_DOWNLOAD_TIMEOUT, follow_redirects=True) as response,
            _temp_file_for(target) as (tmp, f),
        ):
            if response.status_code == 404:
                raise FetchError(
                    f"could not download {url} (HTTP 404 not found)", hint or "check the URL"
                )
            if response.status_code != 200:
                raise FetchError(
                    f"could not download {url} (HTTP {response.status_code} {response.reason_phrase})",
                    hint or "check the URL, or retry later",
                )
            content_length = _content_length(response)
            # With a Content-Encoding (e.g. gzip), Content-Length is the compressed size, so it
            # says nothing about the size of the file we will write.
            encoded = response.headers.get("content-encoding", "identity").lower() not in (
                "",
                "identity",
            )
            if (
                expected_size is not None
                and content_length is not None
                and not encoded
                and content_length != expected_size
            ):
                # Fail before downloading gigabytes of the wrong file.
                raise FetchError(
                    f"{url} has {content_length} bytes, expected {expected_size}",
                    hint or "the file may have changed upstream; check the URL or version",
                )
            h = hashlib.sha256() if sha256 is not None else None
            written = 0
            with tqdm(
                total=content_length,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"downloading {target.name}",
                file=sys.stderr,
                # None = tqdm's own "only on a tty", so logs and CI stay clean.
                disable=None if progress else True,
                leave=False,
            ) as bar:
                for chunk in response.iter_bytes(_CHUNK_SIZE):
                    f.write(chunk)
                    written += len(chunk)
                    if h is not None:
                        h.update(chunk)
                    # Count wire bytes so the bar matches its Content-Length total.
                    bar.update(response.num_bytes_downloaded - bar.n)
            # Content-Length counts bytes on the wire (possibly compressed), hence num_bytes_downloaded.
            if content_length is not None and response.num_bytes_downloaded != content_length:
                raise FetchError(
                    f"download of {url} was incomplete ({response.num_bytes_downloaded} of "
                    f"{content_length} bytes)",
                    network_hint,
                )
            if expected_size is not None and written != expected_size:
                raise FetchError(
                    f"{url} has {written} bytes, expected {expected_size}",
                    hint or "the file may have changed upstream; check the URL or version",
                )
            if h is not None and sha256 is not None and h.hexdigest() != sha256.lower():
                raise FetchError(
                    f"{url} has sha256 {h.hexdigest()}, expected {sha256}",
                    hint
                    or "the file may have changed upstream or be corrupt; retry or check the URL",
                )
            f.flush()
            os.fsync(f.fileno())
            f.close()
            # Atomic: the final path only ever holds a complete, verified file.
            os.replace(tmp, target)
    except FetchError:
        raise
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as e:
        raise FetchError(
            f"could not download {url} (no network? {_describe(e)})", network_hint
        ) from e
    except httpx.TimeoutException as e:
        raise FetchError(f"download of {url} timed out ({_describe(e)})", network_hint) from e
    except httpx.TransportError as e:
        raise FetchError(f"download of {url} was interrupted ({_describe(e)})", network_hint) from e
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise FetchError(
            f"could not download {url} ({_describe(e)})", hint or "check the URL"
        ) from e
    except OSError as e:
        raise FetchError(
            f"could not write {target} ({e})",
            hint or f"check free disk space, or set {CACHE_ENV_VAR} to another folder",
        ) from e


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__
