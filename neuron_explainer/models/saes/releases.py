"""SAELens' table of published SAEs, shipped as a data file (no `sae-lens` import at run time).

`data/saelens_releases.json.gz` is generated from SAELens' `pretrained_saes.yaml` by
`build_release_table.py`. A release (e.g. "gpt2-small-res-jb") names a Hugging Face repository
and maps each SAE id (e.g. "blocks.8.hook_resid_pre") to a path inside it; its `conversion` is
SAELens' name for the file layout ("sae_lens" for its own folders, "gemma_2" for Gemma Scope,
"llama_scope", ...).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["RELEASE_TABLE", "Release", "find_release", "release_table", "split_release_spec"]

RELEASE_TABLE = Path(__file__).parent / "data" / "saelens_releases.json.gz"


@dataclass(frozen=True)
class Release:
    name: str
    repo_id: str
    model: str
    conversion: str
    saes: dict[str, str]  # SAE id -> path in the repository
    config_overrides: dict[str, Any] = field(default_factory=dict)
    norm_scaling_factors: dict[str, float] = field(default_factory=dict)

    def path_of(self, sae_id: str) -> str:
        if sae_id not in self.saes:
            ids = list(self.saes)
            shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
            raise ValueError(f"release {self.name!r} has no SAE id {sae_id!r}; its ids: {shown}")
        return self.saes[sae_id]


@cache
def release_table() -> dict[str, Release]:
    """Release name -> Release, read once from the packaged data file."""
    table = json.loads(gzip.decompress(RELEASE_TABLE.read_bytes()))
    return {
        name: Release(
            name=name,
            repo_id=r["repo_id"],
            model=r["model"],
            conversion=r["conversion"],
            saes=r["saes"],
            config_overrides=r.get("config_overrides", {}),
            norm_scaling_factors=r.get("norm_scaling_factors", {}),
        )
        for name, r in table["releases"].items()
    }


def find_release(name: str) -> Release:
    table = release_table()
    if name not in table:
        close = sorted(r for r in table if name.split("-")[0] in r)[:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown SAELens release {name!r} ({len(table)} known{hint})")
    return table[name]


def split_release_spec(spec: str) -> tuple[str, str] | None:
    """"release:sae_id" -> (release, sae_id) when `release` is a known release, else None."""
    release, sep, sae_id = spec.partition(":")
    if not sep or not sae_id or release not in release_table():
        return None
    return release, sae_id
