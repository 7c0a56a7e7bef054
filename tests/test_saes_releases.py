"""The shipped SAELens release table: generated from sae-lens' own pretrained_saes.yaml, read
without importing sae-lens."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from importlib import resources

import yaml

from neuron_explainer.models.saes.build_release_table import build_release_table
from neuron_explainer.models.saes.loading import SUPPORTED_CONVERSIONS
from neuron_explainer.models.saes.releases import (
    RELEASE_TABLE,
    find_release,
    release_table,
    split_release_spec,
)


def test_table_agrees_with_the_installed_sae_lens_yaml() -> None:
    data = yaml.load(
        resources.files("sae_lens").joinpath("pretrained_saes.yaml").read_text(),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    built = build_release_table(data, generated_from="test")["releases"]
    shipped = json.loads(gzip.decompress(RELEASE_TABLE.read_bytes()))
    assert shipped["generated_from"].startswith("sae-lens ")
    common = set(built) & set(shipped["releases"])
    assert len(common) >= 0.9 * len(shipped["releases"])  # a newer sae-lens may add or drop a few
    for name in common:
        ours, theirs = shipped["releases"][name], built[name]
        assert (ours["repo_id"], ours["conversion"]) == (theirs["repo_id"], theirs["conversion"]), name
    gpt2 = data["gpt2-small-res-jb"]
    release = find_release("gpt2-small-res-jb")
    assert release.repo_id == gpt2["repo_id"] and release.model == gpt2["model"]
    assert release.saes == {s["id"]: s["path"] for s in gpt2["saes"]}
    assert release.config_overrides == gpt2["config_overrides"]
    llama = find_release("llama_scope_lxr_8x")
    assert llama.norm_scaling_factors["l15r_8x"] == next(s["norm_scaling_factor"] for s in data["llama_scope_lxr_8x"]["saes"] if s["id"] == "l15r_8x")


def test_reading_the_table_does_not_import_sae_lens() -> None:
    code = (
        "import sys; from neuron_explainer.models.saes import load_sae, release_table; "
        "assert len(release_table()) > 100; assert 'sae_lens' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_release_specs_and_supported_layouts() -> None:
    assert split_release_spec("gpt2-small-res-jb:blocks.8.hook_resid_pre") == ("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert split_release_spec("/some/folder:x") is None and split_release_spec("gpt2-small-res-jb") is None
    conversions = {r.conversion for r in release_table().values()}
    assert set(SUPPORTED_CONVERSIONS) <= conversions
    n_supported = sum(len(r.saes) for r in release_table().values() if r.conversion in SUPPORTED_CONVERSIONS)
    assert n_supported > 3000
