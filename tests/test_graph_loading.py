"""load_transcoders: circuit-tracer's transcoder sets and cross-layer transcoders, told apart by
their config.yaml, from a folder or the hub (a local server speaking the hub's file API)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import LocalHTTPServer
from fake_hub import FakeHub
from graph_helpers import random_model, random_transcoders, save_circuit_tracer_set

from neuron_explainer.debugger.graph import CrossLayerTranscoder, attribute, load_transcoders

warnings.filterwarnings("ignore", module="circuit_tracer")


@pytest.fixture
def hub(http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(http_server)
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return fake


def saved_ct_clt(folder: Path, n_layers: int, d_model: int, *, jumprelu: bool = True) -> Path:
    """A random cross-layer transcoder written by circuit-tracer's own `to_safetensors`."""
    from circuit_tracer.transcoder.cross_layer_transcoder import (
        CrossLayerTranscoder as CTCrossLayerTranscoder,
    )

    clt = CTCrossLayerTranscoder(
        n_layers, 32, d_model, activation_function="jump_relu" if jumprelu else "relu", lazy_decoder=False,
        device=torch.device("cpu"), dtype=torch.float32,
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(d_model))
    clt.to_safetensors(str(folder))
    config = {"model_kind": "cross_layer_transcoder", "feature_input_hook": "hook_resid_mid", "feature_output_hook": "hook_mlp_out", "scan": "clt"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_cross_layer_transcoder_files(tmp_path: Path) -> None:
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

    model = random_model("llama")
    folder = saved_ct_clt(tmp_path / "clt", model.cfg.n_layers, model.cfg.d_model)
    ours = load_transcoders(folder, model)
    assert isinstance(ours, CrossLayerTranscoder) and ours.threshold is not None
    assert ours.reads == ["blocks.0.resid.post_attn", "blocks.1.resid.post_attn"]  # hook_resid_mid
    assert ours.writes == ["blocks.0.resid.delta_mlp", "blocks.1.resid.delta_mlp"]
    ref = load_clt(str(folder), lazy_decoder=False, device=torch.device("cpu"), dtype=torch.float32)
    x = torch.randn(2, 5, model.cfg.d_model, generator=torch.Generator().manual_seed(2))
    latents = [ours.encode(i, x[i]) for i in range(2)]
    torch.testing.assert_close(torch.stack(latents), ref.encode(x).detach())
    assert 0 < (torch.stack(latents) != 0).float().mean() < 1
    recon = ref.decode(torch.stack(latents).detach().to_sparse())
    for layer in range(2):
        torch.testing.assert_close(ours.decode(layer, latents), recon[layer].detach(), atol=1e-5, rtol=1e-5)
    graph = attribute(model, ours, [0, 5, 9, 14, 22, 7], max_feature_nodes=None)
    assert graph.n_features > 0


def test_from_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    model = random_model("gpt2")
    saved_ct_clt(tmp_path / "clt", model.cfg.n_layers, model.cfg.d_model, jumprelu=False)
    hub.add_folder("owner/clt", tmp_path / "clt", under="v1")
    local = load_transcoders(tmp_path / "clt", model)
    remote = load_transcoders("hf://owner/clt/v1", model, cache_dir=tmp_path / "cache")
    assert isinstance(local, CrossLayerTranscoder) and isinstance(remote, CrossLayerTranscoder)
    assert torch.equal(local.W_dec[0], remote.W_dec[0]) and remote.threshold is None
    fetched = len(hub.downloads())
    load_transcoders("hf://owner/clt/v1", model, cache_dir=tmp_path / "cache")
    assert len(hub.downloads()) == fetched  # the second load is a cache hit
    save_circuit_tracer_set(random_transcoders(model), tmp_path / "set")
    hub.add_folder("owner/set", tmp_path / "set")
    per_layer = load_transcoders("hf://owner/set", model, cache_dir=tmp_path / "cache")
    assert isinstance(per_layer, list) and len(per_layer) == model.cfg.n_layers


def test_refusals(tmp_path: Path) -> None:
    model = random_model("gpt2")
    three = saved_ct_clt(tmp_path / "three", 3, model.cfg.d_model)
    with pytest.raises(ValueError, match="3 layers of width 64; the model 2 of width 64"):
        load_transcoders(three, model)
    (three / "W_dec_1.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"W_dec_1\.safetensors: not a readable safetensors file"):
        load_transcoders(three, model)
    (three / "W_enc_2.safetensors").rename(three / "W_enc_5.safetensors")
    with pytest.raises(ValueError, match=r"W_enc_0 \.\. W_enc_N-1"):
        load_transcoders(three, model)
    config = yaml.safe_load((three / "config.yaml").read_text())
    (three / "config.yaml").write_text(yaml.safe_dump({**config, "model_kind": "something"}))
    with pytest.raises(ValueError, match="model_kind 'something' is not supported"):
        load_transcoders(three, model)
