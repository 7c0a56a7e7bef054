"""Downloads from the Hugging Face hub through `huggingface_hub` (its cache, its progress bars).

`HF_ENDPOINT` is read at each call (huggingface_hub reads it once, at import), so a mirror or a
local test server set later is honoured; `HF_HUB_OFFLINE` and `HF_HOME` work as huggingface_hub
documents. Files already in the cache are used without the network when it is unreachable.
Every failure is a one-line `FetchError` that says what to pass instead: a local folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from neuron_explainer.file_utils import FetchError

__all__ = [
    "LOCAL_FOLDER_HINT",
    "HubUnreachable",
    "cached_state",
    "download_file",
    "download_snapshot",
    "endpoint",
    "parse_hf_uri",
]

LOCAL_FOLDER_HINT = (
    "check the network (and HF_ENDPOINT), or download the files and pass their local folder "
    "instead (e.g. --sae /path/to/sae_folder)"
)


class HubUnreachable(FetchError):
    """The hub cannot be reached (or HF_HUB_OFFLINE is set) and the file is not cached."""


_HF_URI = re.compile(r"^hf://([^/@?]+/[^/@?]+)(?:/([^@?]*))?(?:@([^?]+)|\?revision=(.+))?$")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def parse_hf_uri(uri: str) -> tuple[str, str, str | None]:
    """"hf://owner/repo[/path/in/repo][@revision]" (or "?revision=") -> (repo_id, path, revision)."""
    m = _HF_URI.match(uri)
    if m is None:
        raise ValueError(f"not a Hugging Face location {uri!r}; write hf://owner/repo[/path][@revision]")
    repo_id, path, rev_at, rev_query = m.groups()
    return repo_id, (path or "").strip("/"), rev_at or rev_query


def _fetch_error(e: Exception, repo_id: str, what: str) -> FetchError:
    from huggingface_hub import errors

    if isinstance(e, errors.LocalEntryNotFoundError | errors.OfflineModeIsEnabled):
        return HubUnreachable(
            f"cannot download {what} from {repo_id} ({endpoint()} unreachable or offline) and it is "
            "not in the Hugging Face cache",
            LOCAL_FOLDER_HINT,
        )
    if isinstance(e, errors.GatedRepoError):
        return FetchError(f"{repo_id} is gated", "accept its terms on the hub and log in (`hf auth login`)")
    if isinstance(e, errors.RepositoryNotFoundError):
        return FetchError(f"no Hugging Face repository {repo_id} at {endpoint()} (or it is private)", LOCAL_FOLDER_HINT)
    if isinstance(e, errors.RevisionNotFoundError):
        return FetchError(f"{repo_id} has no such revision", "check the @revision")
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return FetchError(f"{repo_id} has no file {what}", "check the SAE id or path")
    return FetchError(f"downloading {what} from {repo_id} failed ({type(e).__name__}: {e})", LOCAL_FOLDER_HINT)


def cached_state(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """"present", "absent" (the hub said so when last asked) or "unknown", from the cache alone."""
    from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

    found = try_to_load_from_cache(
        repo_id, filename, cache_dir=None if cache_dir is None else Path(cache_dir), revision=revision
    )
    if found is _CACHED_NO_EXIST:
        return "absent"
    return "unknown" if found is None else "present"


def download_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    optional: bool = False,
) -> Path | None:
    """Local path of `filename` in `repo_id` (downloaded once into the hub cache). With
    `optional`, a file the repository does not have gives None instead of an error (also
    offline, when the cache remembers that the hub said so)."""
    from huggingface_hub import errors, hf_hub_download

    if optional and cached_state(repo_id, filename, revision=revision, cache_dir=cache_dir) == "absent":
        # known to be missing: asking an unreachable hub again would only wait out its retries
        return None
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=None if cache_dir is None else Path(cache_dir),
                endpoint=endpoint(),
            )
        )
    except Exception as e:  # hub, HTTP and OS errors alike become one line
        if optional and isinstance(e, errors.RemoteEntryNotFoundError):
            return None
        raise _fetch_error(e, repo_id, filename) from e


def download_snapshot(
    repo_id: str,
    allow_patterns: list[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Local folder of the repository's files matching `allow_patterns` (one snapshot of the
    hub cache)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=allow_patterns,
                cache_dir=None if cache_dir is None else Path(cache_dir),
                endpoint=endpoint(),
            )
        )
    except Exception as e:
        raise _fetch_error(e, repo_id, " ".join(allow_patterns)) from e
