"""SAE downloads through huggingface_hub, against a local server speaking the hub's file API
(fake_hub.py) via HF_ENDPOINT: by SAELens release, by hf://repo/path, transcoder sets; the
second load is a cache hit, a dead hub falls back to the cache, and an empty cache offline is a
one-line error naming what to pass instead."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import sae_lens as sl
import torch
import yaml
from conftest import LocalHTTPServer
from fake_hub import FakeHub
from sae_lens.saes.sae import SAEMetadata
from test_saes_formats import (
    circuit_tracer_set,
    llama_scope_by_hand,
    write_gemma_scope,
    write_llama_scope,
)

from neuron_explainer.file_utils import FetchError
from neuron_explainer.models.saes import load_sae, load_transcoder_set, release_table

warnings.filterwarnings("ignore", module="sae_lens")
DEAD_ENDPOINT = "http://127.0.0.1:9"  # discard port: connection refused


@pytest.fixture
def hub(http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(http_server)
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return fake


def _saelens_sae(folder: Path, hook: str) -> sl.SAE:
    gen = torch.Generator().manual_seed(0)
    sae = sl.StandardSAE(sl.StandardSAEConfig(d_in=16, d_sae=48, metadata=SAEMetadata(hook_name=hook, model_name="gpt2-small")))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    sae.save_model(folder)
    return sae


def test_release_download_then_cache_hit_then_offline(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = release_table()["gpt2-small-res-jb"]
    sae_id = "blocks.8.hook_resid_pre"
    ref = _saelens_sae(tmp_path / "made", sae_id)
    hub.add_folder(release.repo_id, tmp_path / "made", under=release.saes[sae_id])
    cache = tmp_path / "hf_cache"

    first = load_sae(f"gpt2-small-res-jb:{sae_id}", cache_dir=cache)
    base = f"{release.repo_id}/resolve/main/{sae_id}"
    assert hub.downloads() == [f"{base}/cfg.json", f"{base}/sae_weights.safetensors"]  # no sparsity file there
    assert first.reads == "blocks.7.resid.post_mlp" and first.info.source == f"gpt2-small-res-jb:{sae_id}"
    # the release table says these were trained with centered writing weights (config override)
    assert first.center_input
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first.encode(x), ref.encode(x - x.mean(-1, keepdim=True)), atol=1e-5, rtol=1e-5)

    second = load_sae(f"gpt2-small-res-jb:{sae_id}", cache_dir=cache)
    assert len(hub.downloads()) == 2  # cache hit: no file body fetched again
    torch.testing.assert_close(second.W_enc, first.W_enc)

    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)  # the hub is gone: the cache still serves
    third = load_sae(f"gpt2-small-res-jb:{sae_id}", cache_dir=cache)
    torch.testing.assert_close(third.W_dec, first.W_dec)

    # Nothing cached, nothing reachable. (A refused connection makes huggingface_hub retry for
    # ~20 s before it gives up; HF_HUB_OFFLINE takes the same path to the error at once.)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FetchError, match="local folder") as e:
        load_sae(f"gpt2-small-res-jb:{sae_id}", cache_dir=tmp_path / "empty_cache")
    assert "\n" not in str(e.value) and "--sae" in str(e.value)


def test_gemma_scope_and_llama_scope_releases(hub: FakeHub, tmp_path: Path) -> None:
    gemma = release_table()["gemma-scope-2b-pt-res-canonical"]
    sae_id, path = next(iter(gemma.saes.items()))
    write_gemma_scope(tmp_path / "gs", 16, 32)
    hub.add_folder(gemma.repo_id, tmp_path / "gs", under=path)
    sae = load_sae(f"{gemma.name}:{sae_id}", cache_dir=tmp_path / "c")
    layer = int(path.split("/")[0].split("_")[1])
    assert sae.info.format == "gemma_scope" and sae.reads == f"blocks.{layer}.resid.post_mlp"

    llama = release_table()["llama_scope_lxr_8x"]
    p = write_llama_scope(
        tmp_path / "ls", 16, 64, hook_in="blocks.15.hook_resid_post", hook_out="blocks.15.hook_resid_post", norm_in=1.7, norm_out=1.7
    )
    hub.add_folder(llama.repo_id, tmp_path / "ls", under=llama.saes["l15r_8x"])
    sae = load_sae("llama_scope_lxr_8x:l15r_8x", cache_dir=tmp_path / "c")
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32) * 0.5
    latents, _ = llama_scope_by_hand(p, x)
    torch.testing.assert_close(sae.encode(torch.from_numpy(x)), torch.from_numpy(latents.astype(np.float32)), atol=1e-5, rtol=1e-5)


def test_hf_repo_and_path(hub: FakeHub, tmp_path: Path) -> None:
    _saelens_sae(tmp_path / "made", "blocks.2.hook_mlp_out")
    hub.add_folder("someone/my-saes", tmp_path / "made", under="layer2/mlp")
    sae = load_sae("hf://someone/my-saes/layer2/mlp@main", cache_dir=tmp_path / "c")
    assert sae.reads == "blocks.2.resid.delta_mlp" and sae.info.format == "saelens"
    p = write_llama_scope(tmp_path / "ls", 8, 16, hook_in="blocks.1.hook_attn_out", hook_out="blocks.1.hook_attn_out", norm_in=2.0, norm_out=2.0)
    hub.add_folder("someone/my-saes", tmp_path / "ls", under="llama/L1A")
    sae = load_sae("hf://someone/my-saes/llama/L1A", cache_dir=tmp_path / "c")
    assert sae.info.format == "llama_scope" and sae.reads == "blocks.1.resid.delta_attn"
    assert math.isclose(sae.info.extra["norm_scale_in"], math.sqrt(8) / p["hp"]["dataset_average_activation_norm"]["in"])
    with pytest.raises(FetchError, match=r"holds none of cfg\.json"):
        load_sae("hf://someone/my-saes/nothing/here", cache_dir=tmp_path / "c")
    with pytest.raises(FetchError, match="no Hugging Face repository someone/missing"):
        load_sae("hf://someone/missing/x", cache_dir=tmp_path / "c")


@pytest.mark.parametrize("listed", [False, True])
def test_transcoder_set_from_the_hub(listed: bool, hub: FakeHub, tmp_path: Path) -> None:
    made = circuit_tracer_set(12, 24, 3, jumprelu=True, skip=True)
    made.to_safetensors(str(tmp_path / "set"))
    config = {"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out"}
    if listed:  # the published sets list hf:// URIs (possibly of another repository)
        config["transcoders"] = [f"hf://owner/weights/tc/layer_{i}.safetensors" for i in range(3)]
        hub.add_folder("owner/weights", tmp_path / "set", under="tc")
    else:
        hub.add_folder("owner/set", tmp_path / "set", under="v1")
    hub.add_file("owner/set", "v1/config.yaml", yaml.safe_dump(config).encode())
    loaded = load_transcoder_set("hf://owner/set/v1", cache_dir=tmp_path / "c")
    assert len(loaded) == 3 and loaded[2].reads == "blocks.2.resid.post_mlp_ln"
    x = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    for layer in range(3):
        torch.testing.assert_close(loaded[layer].decode(loaded[layer].encode(x), x), made[layer](x).detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="transcoder set"):
        load_sae("hf://owner/set/v1", cache_dir=tmp_path / "c")


def test_release_errors_are_one_line(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no SAE id 'blocks\.99\.hook_resid_pre'; its ids: blocks\.0") as e:
        load_sae("gpt2-small-res-jb:blocks.99.hook_resid_pre", cache_dir=tmp_path)
    assert "\n" not in str(e.value)
    gemma3 = next(r for r in release_table().values() if r.conversion == "gemma_3")
    with pytest.raises(ValueError, match="'gemma_3' layout, which is not supported"):
        load_sae(f"{gemma3.name}:{next(iter(gemma3.saes))}", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown SAELens release 'gpt2-small-res-nope'"):
        load_sae("gpt2-small-res-nope:blocks.1.hook_resid_pre")
    with pytest.raises(ValueError, match="pass a local folder, RELEASE:SAE_ID"):
        load_sae("no/such/folder")
    assert hub.downloads() == []


def test_other_release_layouts(hub: FakeHub, tmp_path: Path) -> None:
    """One release of each further layout: Qwen Scope, dictionary_learning, circuit-tracer layer
    files (mwhanna), Gemma Scope transcoders."""
    table = release_table()
    cache = tmp_path / "c"
    qwen = next(r for r in table.values() if r.conversion == "qwen_scope")
    sae_id, path = next(iter(qwen.saes.items()))
    g = torch.Generator().manual_seed(0)
    d_sae = 128
    buf = tmp_path / "q.pt"
    torch.save({"W_enc": torch.randn(d_sae, 16, generator=g), "W_dec": torch.randn(16, d_sae, generator=g), "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(16)}, buf)
    hub.add_file(qwen.repo_id, path, buf.read_bytes())
    sae = load_sae(f"{qwen.name}:{sae_id}", cache_dir=cache)
    assert sae.info.format == "qwen_scope" and sae.k == int(qwen.repo_id.rsplit("_", 1)[1]) and sae.info.model_name == qwen.model

    dl = next(r for r in table.values() if r.conversion == "dictionary_learning_1")
    sae_id, path = next(iter(dl.saes.items()))
    (tmp_path / "dl").mkdir()
    trainer = {"dict_class": "AutoEncoder", "activation_dim": 16, "dict_size": 32, "layer": 11, "lm_name": "m"}
    (tmp_path / "dl" / "config.json").write_text(json.dumps({"trainer": trainer}))
    torch.save({"encoder.weight": torch.randn(32, 16), "encoder.bias": torch.zeros(32), "decoder.weight": torch.randn(16, 32), "bias": torch.zeros(16)}, tmp_path / "dl" / "ae.pt")
    hub.add_folder(dl.repo_id, tmp_path / "dl", under=path)
    sae = load_sae(f"{dl.name}:{sae_id}", cache_dir=cache)
    assert sae.info.format == "dictionary_learning" and sae.reads == "blocks.11.resid.post_mlp"

    mw = next(r for r in table.values() if r.conversion == "mwhanna_transcoder")
    made = circuit_tracer_set(12, 24, 1, jumprelu=False, skip=False)
    made.to_safetensors(str(tmp_path / "mw"))
    hub.add_file(mw.repo_id, "layer_0.safetensors", (tmp_path / "mw" / "layer_0.safetensors").read_bytes())
    tc = load_sae(f"{mw.name}:layer_0", cache_dir=cache)
    assert tc.is_transcoder and tc.reads == "blocks.0.resid.post_mlp_ln" and tc.writes == "blocks.0.resid.delta_mlp"

    gt = next(r for r in table.values() if r.conversion == "gemma_2_transcoder")
    sae_id, path = next(iter(gt.saes.items()))
    write_gemma_scope(tmp_path / "gt", 16, 32)
    hub.add_folder(gt.repo_id, tmp_path / "gt", under=path)
    tc = load_sae(f"{gt.name}:{sae_id}", cache_dir=cache)
    assert tc.is_transcoder and tc.writes == "blocks.0.resid.delta_mlp"
