"""Downloads from the Hugging Face hub through `huggingface_hub` (its cache, its progress bars):
models by repo id (`download_model`), SAE files and folders.

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
    "cache_dir",
    "cached_state",
    "download_file",
    "download_model",
    "download_snapshot",
    "endpoint",
    "is_repo_id",
    "parse_hf_uri",
]

LOCAL_FOLDER_HINT = (
    "check the network (and HF_ENDPOINT), or download the files and pass their local folder "
    "instead (--model-path FOLDER for a model, --sae FOLDER for an SAE)"
)


class HubUnreachable(FetchError):
    """The hub cannot be reached (or HF_HUB_OFFLINE is set) and the file is not cached."""


_HF_URI = re.compile(r"^hf://([^/@?]+/[^/@?]+)(?:/([^@?]*))?(?:@([^?]+)|\?revision=(.+))?$")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def cache_dir() -> Path:
    """The hub cache, read when asked (huggingface_hub reads HF_HUB_CACHE once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name


def parse_hf_uri(uri: str) -> tuple[str, str, str | None]:
    """"hf://owner/repo[/path/in/repo][@revision]" (or "?revision=") -> (repo_id, path, revision)."""
    m = _HF_URI.match(uri)
    if m is None:
        raise ValueError(f"not a Hugging Face location {uri!r}; write hf://owner/repo[/path][@revision]")
    repo_id, path, rev_at, rev_query = m.groups()
    return repo_id, (path or "").strip("/"), rev_at or rev_query


def _fetch_error(e: Exception, repo_id: str, what: str, cache: Path) -> FetchError:
    from huggingface_hub import errors

    if isinstance(e, errors.LocalEntryNotFoundError | errors.OfflineModeIsEnabled):
        return HubUnreachable(
            f"cannot download {what} from {repo_id} ({endpoint()} unreachable or offline) and it is "
            f"not in the Hugging Face cache ({cache})",
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

    found = try_to_load_from_cache(repo_id, filename, cache_dir=_cache(cache_dir), revision=revision)
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
                cache_dir=_cache(cache_dir),
                endpoint=endpoint(),
            )
        )
    except Exception as e:  # hub, HTTP and OS errors alike become one line
        if optional and isinstance(e, errors.RemoteEntryNotFoundError):
            return None
        raise _fetch_error(e, repo_id, filename, _cache(cache_dir)) from e


def download_snapshot(
    repo_id: str,
    allow_patterns: list[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    what: str | None = None,
) -> Path:
    """Local folder of the repository's files matching `allow_patterns` (one snapshot of the
    hub cache); `what` names them in errors."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=allow_patterns,
                cache_dir=_cache(cache_dir),
                endpoint=endpoint(),
            )
        )
    except Exception as e:
        raise _fetch_error(e, repo_id, what or " ".join(allow_patterns), _cache(cache_dir)) from e


def _cache(folder: str | os.PathLike[str] | None) -> Path:
    return cache_dir() if folder is None else Path(folder)


_CONFIG = ["config.json", "generation_config.json"]
_TOKENIZER = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
_SAFETENSORS = ["model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
_BIN = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of a model repo's files (config, weights, tokenizer), downloaded once into
    the hub cache, or found there offline. GPT-2's old unowned ids (`gpt2`) also find
    `openai-community/`'s. Only the safetensors weights are fetched, or the .bin ones where a
    repo has none."""
    candidates = [repo_id] if "/" in repo_id else [repo_id, f"openai-community/{repo_id}"]
    for i, candidate in enumerate(candidates):
        try:
            folder = download_snapshot(candidate, _CONFIG + _TOKENIZER + _SAFETENSORS, revision=revision, what="the model")
            if not any(folder.glob("*.safetensors")):
                folder = download_snapshot(candidate, _CONFIG + _TOKENIZER + _BIN, revision=revision, what="the model")
        except FetchError:
            if i == len(candidates) - 1:
                raise
            continue
        if not (folder / "config.json").is_file():
            raise FetchError(f"{candidate} has no config.json: it is not a model repository", "pass a local folder with --model-path")
        return folder
    raise AssertionError("unreachable")
