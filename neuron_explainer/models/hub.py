"""Hugging Face hub repos by id, through `huggingface_hub`: its cache, its progress bars, and
`HF_ENDPOINT` / `HF_HUB_OFFLINE` as it honours them. Only the files a model needs are fetched:
config.json, the safetensors weights (or the .bin ones where a repo has no safetensors), and the
tokenizer."""

from __future__ import annotations

import os
import re
from pathlib import Path

_CONFIG = ["config.json", "generation_config.json"]
_TOKENIZER = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
_SAFETENSORS = ["model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
_BIN = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class HubError(ValueError):
    """A repo could not be fetched; the message is one line saying what to do."""


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.fullmatch(name)) and ".." not in name


def cache_dir() -> Path:
    """The hub cache, read when asked (huggingface_hub reads HF_HUB_CACHE once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of `repo_id`'s model files, downloaded once into the hub cache (or
    found there when offline). GPT-2's old unowned ids (`gpt2`) also find `openai-community/`'s."""
    candidates = [repo_id] if "/" in repo_id else [repo_id, f"openai-community/{repo_id}"]
    for candidate in candidates[:-1]:
        try:
            return _snapshot(candidate, revision)
        except HubError:
            continue
    return _snapshot(candidates[-1], revision)


def _snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    cache, endpoint = cache_dir(), os.environ.get("HF_ENDPOINT") or None

    def download(patterns: list[str]) -> Path:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, endpoint=endpoint, allow_patterns=patterns))

    try:
        folder = download(_CONFIG + _TOKENIZER + _SAFETENSORS)
        if not any(folder.glob("*.safetensors")) and not (folder / "model.safetensors.index.json").exists():
            folder = download(_CONFIG + _TOKENIZER + _BIN)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise HubError(
            f"the Hugging Face hub answered {status} for {repo_id!r}: check the repo id (and "
            "HF_TOKEN for gated repos), or pass a local folder with --model-path"
        ) from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as e:
        raise HubError(
            f"{repo_id!r} is not in the local Hugging Face cache ({cache}) and could "
            "not be downloaded: connect to the network (or set HF_ENDPOINT), or pass a local "
            "folder with --model-path"
        ) from e
    if not (folder / "config.json").is_file():
        raise HubError(f"{repo_id!r} has no config.json: it is not a model repo; pass a local folder with --model-path")
    return folder
