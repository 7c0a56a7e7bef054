"""Regenerate `data/saelens_releases.json.gz` from SAELens' `pretrained_saes.yaml`.

    python -m neuron_explainer.models.saes.build_release_table [path/to/pretrained_saes.yaml]

Without a path it reads the copy inside the installed `sae-lens` package (a test-only
dependency; nothing at run time imports it). Only what loading needs is kept: per release the
Hugging Face repository, the subject model, SAELens' conversion (its name for the file layout),
the config overrides, and per SAE id its path in the repository and, where SAELens has one,
the dataset norm scaling factor.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from neuron_explainer.file_utils import atomic_write_bytes
from neuron_explainer.models.saes.releases import RELEASE_TABLE

__all__ = ["build_release_table", "main"]


def build_release_table(data: dict[str, Any], *, generated_from: str) -> dict[str, Any]:
    """The compact table from the parsed YAML (release name -> release)."""
    releases: dict[str, Any] = {}
    for name, release in sorted(data.items()):
        saes: dict[str, str] = {}
        factors: dict[str, float] = {}
        for entry in release["saes"]:
            sae_id = str(entry["id"])
            saes[sae_id] = str(entry["path"])
            if "norm_scaling_factor" in entry:
                factors[sae_id] = float(entry["norm_scaling_factor"])
        item: dict[str, Any] = {
            "repo_id": release["repo_id"],
            "model": release["model"],
            "conversion": release.get("conversion_func") or "sae_lens",
            "saes": saes,
        }
        if release.get("config_overrides"):
            item["config_overrides"] = release["config_overrides"]
        if factors:
            item["norm_scaling_factors"] = factors
        releases[name] = item
    return {"generated_from": generated_from, "releases": releases}


def main(argv: list[str] | None = None) -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("yaml", nargs="?", help="pretrained_saes.yaml (default: the installed sae-lens')")
    args = parser.parse_args(argv)
    if args.yaml:
        text, origin = Path(args.yaml).read_text(), args.yaml
    else:
        from importlib.metadata import version

        text = resources.files("sae_lens").joinpath("pretrained_saes.yaml").read_text()
        origin = f"sae-lens {version('sae-lens')} pretrained_saes.yaml"
    table = build_release_table(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), generated_from=origin)
    payload = json.dumps(table, separators=(",", ":"), sort_keys=True).encode()
    atomic_write_bytes(RELEASE_TABLE, gzip.compress(payload, mtime=0))
    n = sum(len(r["saes"]) for r in table["releases"].values())
    print(f"wrote {RELEASE_TABLE}: {len(table['releases'])} releases, {n} SAEs", file=sys.stderr)


if __name__ == "__main__":
    main()
