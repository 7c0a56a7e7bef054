"""Gemma Scope, Llama Scope and circuit-tracer files, built here in their published layouts.

Each is checked against an independent numpy computation of the published formula, and where a
reference library reads the layout offline, against it too: sae-lens' own Gemma Scope and Llama
Scope loaders (with their download function pointed at the local files) and circuit-tracer's
transcoder loaders on files written by circuit-tracer's own save code.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from neuron_explainer.models.saes import (
    HookConventions,
    detect_format,
    hook_point_for,
    load_gemma_scope,
    load_llama_scope,
    load_sae,
    load_transcoder_set,
)

warnings.filterwarnings("ignore", module="sae_lens")
ATOL = 1e-5


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def close(ours: torch.Tensor, expected: np.ndarray | torch.Tensor) -> None:
    ref = torch.as_tensor(np.asarray(expected), dtype=ours.dtype)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------------ Gemma Scope


def write_gemma_scope(folder: Path, d_in: int, d_sae: int, d_out: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    g = rng(seed)
    d_out = d_out or d_in
    params = {
        "W_enc": (g.standard_normal((d_in, d_sae)) / math.sqrt(d_in)).astype(np.float32),
        "W_dec": (g.standard_normal((d_sae, d_out)) / math.sqrt(d_sae)).astype(np.float32),
        "b_enc": (g.standard_normal(d_sae) * 0.3).astype(np.float32),
        "b_dec": (g.standard_normal(d_out) * 0.3).astype(np.float32),
        "threshold": (g.random(d_sae) * 0.6).astype(np.float32),
    }
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **params)
    return params


def gemma_scope_by_hand(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeepMind's published JumpReLU: mask * relu(pre), then a plain linear decoder."""
    pre = x @ p["W_enc"] + p["b_enc"]
    latents = (pre > p["threshold"]) * np.maximum(pre, 0)
    return latents, latents @ p["W_dec"] + p["b_dec"]


def test_gemma_scope_residual_sae(tmp_path: Path) -> None:
    folder = tmp_path / "google" / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_14"
    params = write_gemma_scope(folder, 16, 48)
    x = rng(1).standard_normal((2, 5, 16)).astype(np.float32)
    sae = load_sae(folder)
    assert detect_format(folder) == "gemma_scope" and sae.info.format == "gemma_scope"
    assert sae.activation == "jumprelu" and not sae.is_transcoder
    assert sae.reads == sae.writes == "blocks.3.resid.post_mlp"  # hook_resid_post of block 3
    latents, recon = gemma_scope_by_hand(params, x)
    assert 0 < (latents > 0).mean() < 1
    close(sae.encode(torch.from_numpy(x)), latents)
    close(sae.decode(sae.encode(torch.from_numpy(x))), recon)


def test_gemma_scope_attention_sae_reads_hook_z(tmp_path: Path) -> None:
    n_heads, d_head = 4, 3
    folder = tmp_path / "gemma-scope-9b-it-att" / "layer_7" / "width_16k" / "average_l0_30"
    params = write_gemma_scope(folder, n_heads * d_head, 32)
    z = rng(2).standard_normal((2, 3, n_heads, d_head)).astype(np.float32)
    sae = load_gemma_scope(folder / "params.npz")
    assert sae.reshape_hook_z and sae.reads == "blocks.7.attn.v_out"
    latents, recon = gemma_scope_by_hand(params, z.reshape(2, 3, -1))
    close(sae.encode(torch.from_numpy(z)), latents)
    close(sae.decode(sae.encode(torch.from_numpy(z))), recon.reshape(z.shape))


def test_gemma_scope_transcoder_and_explicit_hooks(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_5" / "width_16k" / "average_l0_9"
    params = write_gemma_scope(folder, 16, 40)
    tc = load_sae(folder)
    assert tc.is_transcoder and tc.info.hook_in == "blocks.5.ln2.hook_normalized"
    assert tc.reads == "blocks.5.mlp_ln.normalized" and tc.writes == "blocks.5.resid.delta_mlp"
    x = rng(3).standard_normal((7, 16)).astype(np.float32)
    _, out = gemma_scope_by_hand(params, x)
    close(tc.decode(tc.encode(torch.from_numpy(x))), out)
    # a folder whose names say nothing: hooks given explicitly
    plain = tmp_path / "plain"
    write_gemma_scope(plain, 16, 40)
    assert load_gemma_scope(plain).reads is None
    named = load_gemma_scope(plain, hook_in="blocks.2.hook_mlp_out")
    assert named.reads == "blocks.2.resid.delta_mlp" and not named.is_transcoder


def test_gemma_scope_matches_sae_lens_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sae-lens' own Gemma Scope loader (its download pointed at the local file) agrees."""
    import sae_lens
    from sae_lens.loading import pretrained_sae_loaders as loaders

    repo, sub = "google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_14"
    params = write_gemma_scope(tmp_path / repo / sub, 16, 48)
    monkeypatch.setattr(loaders, "hf_hub_download", lambda repo_id, filename, subfolder, **_: str(tmp_path / repo_id / subfolder / filename))
    cfg, state, _ = loaders.gemma_2_sae_huggingface_loader(repo, sub, cfg_overrides={"d_in": 16, "d_sae": 48})
    ref = sae_lens.SAE.from_dict(loaders.handle_config_defaulting(cfg))
    ref.load_state_dict(state)
    ours = load_gemma_scope(tmp_path / repo / sub)
    x = torch.from_numpy(rng(4).standard_normal((6, 16)).astype(np.float32))
    close(ours.encode(x), ref.encode(x).detach())
    close(ours.decode(ours.encode(x)), ref.decode(ref.encode(x)).detach())
    assert ref.cfg.metadata.hook_name == ours.info.hook_in == "blocks.3.hook_resid_post"
    assert gemma_scope_by_hand(params, x.numpy())[0].shape == (6, 48)


def test_gemma_scope_refusals(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "layer_0" / "width_4k" / "average_l0_6"
    write_gemma_scope(folder, 8, 16)
    with pytest.raises(ValueError, match="embedding SAEs are not supported"):
        load_gemma_scope(folder)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "params.npz", W_enc=np.zeros((4, 8), np.float32))
    with pytest.raises(ValueError, match=r"missing \['W_dec'") as e:
        load_gemma_scope(bad)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------ Llama Scope


def write_llama_scope(
    folder: Path, d_model: int, d_sae: int, *, hook_in: str, hook_out: str, norm_in: float, norm_out: float, seed: int = 0
) -> dict[str, Any]:
    g = rng(seed)
    tensors = {
        "encoder.weight": (g.standard_normal((d_sae, d_model)) / math.sqrt(d_model)).astype(np.float32),
        "encoder.bias": (g.standard_normal(d_sae) * 0.3).astype(np.float32),
        "decoder.weight": (g.standard_normal((d_model, d_sae)) / math.sqrt(d_sae)).astype(np.float32),
        "decoder.bias": (g.standard_normal(d_model) * 0.3).astype(np.float32),
    }
    hp = {
        "d_model": d_model,
        "d_sae": d_sae,
        "hook_point_in": hook_in,
        "hook_point_out": hook_out,
        "use_decoder_bias": True,
        "apply_decoder_bias_to_pre_encoder": False,
        "act_fn": "jumprelu",
        "jump_relu_threshold": 0.15,
        "norm_activation": "dataset-wise",
        "dataset_average_activation_norm": {"in": norm_in, "out": norm_out},
        "sparsity_include_decoder_norm": True,
        "top_k": 50,
    }
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    save_file({k: torch.from_numpy(v) for k, v in tensors.items()}, folder / "checkpoints" / "final.safetensors")
    return {"hp": hp, **tensors}


def llama_scope_by_hand(p: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dataset-norm rescaling in and out, JumpReLU at the threshold scaled like the input."""
    hp = p["hp"]
    s_in = math.sqrt(hp["d_model"]) / hp["dataset_average_activation_norm"]["in"]
    s_out = math.sqrt(hp["d_model"]) / hp["dataset_average_activation_norm"]["out"]
    pre = (x * s_in) @ p["encoder.weight"].T + p["encoder.bias"]
    latents = np.maximum(pre, 0) * (pre > hp["jump_relu_threshold"] * s_in)
    return latents, (latents @ p["decoder.weight"].T + p["decoder.bias"]) / s_out


def test_llama_scope_sae(tmp_path: Path) -> None:
    folder = tmp_path / "Llama3_1-8B-Base-L15R-8x"
    p = write_llama_scope(folder, 16, 64, hook_in="blocks.15.hook_resid_post", hook_out="blocks.15.hook_resid_post", norm_in=1.7, norm_out=1.7)
    sae = load_sae(folder)
    assert detect_format(folder) == "llama_scope" and not sae.is_transcoder
    assert sae.reads == "blocks.15.resid.post_mlp"
    x = rng(5).standard_normal((3, 4, 16)).astype(np.float32) * 0.5
    latents, recon = llama_scope_by_hand(p, x)
    assert 0 < (latents > 0).mean() < 1
    close(sae.encode(torch.from_numpy(x)), latents)
    close(sae.decode(sae.encode(torch.from_numpy(x))), recon)


def test_llama_scope_transcoder_rescales_output_with_its_own_norm(tmp_path: Path) -> None:
    folder = tmp_path / "Llama3_1-8B-Base-L8TC-8x"
    p = write_llama_scope(folder, 16, 64, hook_in="blocks.8.ln2.hook_normalized", hook_out="blocks.8.hook_mlp_out", norm_in=4.0, norm_out=0.21)
    tc = load_llama_scope(folder)
    assert tc.is_transcoder and tc.reads == "blocks.8.mlp_ln.normalized" and tc.writes == "blocks.8.resid.delta_mlp"
    x = rng(6).standard_normal((5, 16)).astype(np.float32)
    latents, out = llama_scope_by_hand(p, x)
    close(tc.encode(torch.from_numpy(x)), latents)
    close(tc.decode(tc.encode(torch.from_numpy(x))), out)


def test_llama_scope_matches_sae_lens_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sae-lens' Llama Scope loader plus the norm fold its from_pretrained applies agree."""
    import sae_lens
    from sae_lens.loading import pretrained_sae_loaders as loaders

    repo, sub = "fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L15R-8x"
    p = write_llama_scope(tmp_path / repo / sub, 16, 64, hook_in="blocks.15.hook_resid_post", hook_out="blocks.15.hook_resid_post", norm_in=1.7, norm_out=1.7)

    def fake_download(repo_id: str, filename: str | None = None, subfolder: str | None = None, **_: Any) -> str:
        return str(tmp_path / repo_id / (subfolder or "") / (filename or ""))

    monkeypatch.setattr(loaders, "hf_hub_download", fake_download)
    cfg, state, _ = loaders.llama_scope_sae_huggingface_loader(repo, sub, cfg_overrides={"dtype": "float32"})
    ref = sae_lens.SAE.from_dict(loaders.handle_config_defaulting(cfg))
    ref.load_state_dict(state)
    ref.fold_activation_norm_scaling_factor(math.sqrt(16) / p["hp"]["dataset_average_activation_norm"]["in"])
    ours = load_llama_scope(tmp_path / repo / sub)
    x = torch.from_numpy(rng(7).standard_normal((6, 16)).astype(np.float32) * 0.5)
    close(ours.encode(x), ref.encode(x).detach())
    close(ours.decode(ours.encode(x)), ref.decode(ref.encode(x)).detach())


def test_llama_scope_refusals(tmp_path: Path) -> None:
    folder = tmp_path / "ls"
    write_llama_scope(folder, 8, 16, hook_in="blocks.1.hook_resid_post", hook_out="blocks.1.hook_resid_post", norm_in=1.0, norm_out=1.0)
    hp = json.loads((folder / "hyperparams.json").read_text())
    for key, value, message in [
        ("act_fn", "topk", "act_fn 'topk'"),
        ("norm_activation", "batch-wise", "norm_activation 'batch-wise'"),
        ("dataset_average_activation_norm", {"in": 0, "out": 1}, "must be a positive number"),
        ("jump_relu_threshold", None, "jump_relu_threshold must be a number"),
    ]:
        (folder / "hyperparams.json").write_text(json.dumps({**hp, key: value}))
        with pytest.raises(ValueError, match=message):
            load_llama_scope(folder)


# --------------------------------------------------------------------------- circuit-tracer


def circuit_tracer_set(d_model: int, d_tc: int, n_layers: int, *, jumprelu: bool, skip: bool, seed: int = 0) -> Any:
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
    from circuit_tracer.transcoder.activation_functions import JumpReLU

    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for layer in range(n_layers):
        # thresholds straddle zero: circuit-tracer's JumpReLU passes negative pre-activations
        # above a negative threshold, a case where a ReLU'd formula would differ
        act = JumpReLU(torch.rand(d_tc, generator=gen) * 0.8 - 0.2, 0.1) if jumprelu else torch.nn.functional.relu
        tc = SingleLayerTranscoder(d_model, d_tc, act, layer, skip_connection=skip, device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            for name, param in tc.named_parameters():
                if name.startswith("activation_function"):
                    continue
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(d_model))
        layers[layer] = tc
    return TranscoderSet(layers, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out", scan="test-scan")


@pytest.mark.parametrize(("jumprelu", "skip"), [(True, True), (False, False), (True, False)])
def test_circuit_tracer_set_matches_circuit_tracer(jumprelu: bool, skip: bool, tmp_path: Path) -> None:
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set as ct_load

    d_model, d_tc, n_layers = 12, 30, 3
    made = circuit_tracer_set(d_model, d_tc, n_layers, jumprelu=jumprelu, skip=skip)
    made.to_safetensors(str(tmp_path))  # circuit-tracer's own writer: layer_{i}.safetensors
    config = {"model_kind": "transcoder_set", "model_name": "meta-llama/Llama-3.2-1B", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out", "scan": "test-scan"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    ref = ct_load(
        {i: str(tmp_path / f"layer_{i}.safetensors") for i in range(n_layers)},
        scan="test-scan", feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out",
        device=torch.device("cpu"), lazy_encoder=False, lazy_decoder=False,
    )
    ours = load_transcoder_set(tmp_path)
    assert len(ours) == n_layers and ours.scan == "test-scan" and ours.model_name == config["model_name"]
    x = torch.randn(2, 5, d_model, generator=torch.Generator().manual_seed(9))
    for layer, tc in enumerate(ours):
        assert tc.reads == f"blocks.{layer}.resid.post_mlp_ln" and tc.writes == f"blocks.{layer}.resid.delta_mlp"
        assert tc.has_skip == skip and tc.activation == ("jumprelu" if jumprelu else "relu")
        latents = tc.encode(x)
        ref_latents = ref[layer].encode(x)
        close(latents, ref_latents.detach())
        assert 0 < (ref_latents != 0).float().mean() < 1
        close(tc.decode(latents, x), ref[layer](x).detach())


def test_circuit_tracer_config_with_a_transcoders_list(tmp_path: Path) -> None:
    # circuit-tracer's config reader (utils.hf_utils) does not import beside huggingface_hub 2;
    # for a list of local paths it hands them to load_transcoder_set unchanged, as done here
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set as ct_load

    made = circuit_tracer_set(12, 30, 2, jumprelu=True, skip=True, seed=3)
    made.to_safetensors(str(tmp_path / "weights"))
    listed = [str(tmp_path / "weights" / f"layer_{i}.safetensors") for i in range(2)]
    config = {"model_kind": "transcoder_set", "feature_input_hook": "hook_resid_mid", "feature_output_hook": "hook_mlp_out", "transcoders": listed}
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "config.yaml").write_text(yaml.safe_dump(config))
    ref = ct_load(
        dict(enumerate(listed)), scan="s", feature_input_hook="hook_resid_mid", feature_output_hook="hook_mlp_out",
        device=torch.device("cpu"), lazy_encoder=False, lazy_decoder=False,
    )
    ours = load_transcoder_set(tmp_path / "set" / "config.yaml")
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(1))
    for layer in range(2):
        assert ours[layer].reads == f"blocks.{layer}.resid.post_attn"
        close(ours[layer].decode(ours[layer].encode(x), x), ref[layer](x).detach())


def test_circuit_tracer_gemma_scope_layouts(tmp_path: Path) -> None:
    """Gemma Scope npz transcoders and Gemma Scope 2 safetensors, read by circuit-tracer's own
    loaders and ours."""
    from circuit_tracer.transcoder.single_layer_transcoder import (
        load_gemma_scope_2_transcoder,
        load_gemma_scope_transcoder,
    )

    from neuron_explainer.models.saes import load_circuit_tracer_layer

    write_gemma_scope(tmp_path / "gs", 12, 30, seed=4)
    g = rng(8)
    gs2 = {
        "w_enc": torch.from_numpy(g.standard_normal((12, 30)).astype(np.float32) / 3.5),
        "w_dec": torch.from_numpy(g.standard_normal((30, 12)).astype(np.float32) / 5.5),
        "b_enc": torch.from_numpy(g.standard_normal(30).astype(np.float32) * 0.3),
        "b_dec": torch.from_numpy(g.standard_normal(12).astype(np.float32) * 0.3),
        "threshold": torch.from_numpy(g.random(30).astype(np.float32) * 0.5),
        "affine_skip_connection": torch.from_numpy(g.standard_normal((12, 12)).astype(np.float32) / 3.5),
    }
    save_file(gs2, tmp_path / "gs2.safetensors")
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(2))
    cpu = torch.device("cpu")
    for path, ref in [
        (tmp_path / "gs" / "params.npz", load_gemma_scope_transcoder(str(tmp_path / "gs" / "params.npz"), 0, device=cpu)),
        (tmp_path / "gs2.safetensors", load_gemma_scope_2_transcoder(str(tmp_path / "gs2.safetensors"), 0, device=cpu)),
    ]:
        ours = load_circuit_tracer_layer(path, 0, feature_input_hook="ln2.hook_normalized", feature_output_hook="hook_mlp_out")
        close(ours.encode(x), ref.encode(x).detach())
        close(ours.decode(ours.encode(x), x), ref(x).detach())


def test_circuit_tracer_refusals(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model_kind": "cross_layer_transcoder", "feature_input_hook": "a", "feature_output_hook": "b"}))
    with pytest.raises(ValueError, match="cross_layer_transcoder"):
        load_transcoder_set(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out"}))
    with pytest.raises(ValueError, match="no layer_"):
        load_transcoder_set(tmp_path)
    made = circuit_tracer_set(8, 16, 3, jumprelu=False, skip=False)
    made.to_safetensors(str(tmp_path))
    (tmp_path / "layer_1.safetensors").unlink()
    with pytest.raises(ValueError, match=r"layer_0 \.\. layer_1"):
        load_transcoder_set(tmp_path)
    with pytest.raises(ValueError, match="transcoder set"):
        load_sae(tmp_path)


# ------------------------------------------------------------------------------ hook names


@pytest.mark.parametrize(
    ("tl", "ours"),
    [
        ("blocks.0.hook_resid_pre", "resid.post_emb"),
        ("blocks.8.hook_resid_pre", "blocks.7.resid.post_mlp"),
        ("blocks.8.hook_resid_mid", "blocks.8.resid.post_attn"),
        ("blocks.8.hook_resid_post", "blocks.8.resid.post_mlp"),
        ("blocks.8.hook_attn_out", "blocks.8.resid.delta_attn"),
        ("blocks.8.hook_mlp_out", "blocks.8.resid.delta_mlp"),
        ("blocks.8.hook_mlp_in", "blocks.8.resid.post_attn"),
        ("blocks.8.attn.hook_z", "blocks.8.attn.v_out"),
        ("blocks.8.attn.hook_q", "blocks.8.attn.q"),
        ("blocks.8.attn.hook_pattern", "blocks.8.attn.qk_probs"),
        ("blocks.8.attn.hook_attn_scores", "blocks.8.attn.qk_logits"),
        ("blocks.8.ln2.hook_normalized", "blocks.8.mlp_ln.normalized"),
        ("blocks.8.ln1.hook_scale", "blocks.8.attn_ln.scale"),
        ("blocks.8.mlp.hook_in", "blocks.8.resid.post_mlp_ln"),
        ("blocks.8.mlp.hook_pre", "blocks.8.mlp.pre_act"),
        ("blocks.8.mlp.hook_post", "blocks.8.mlp.post_act"),
        ("blocks.8.mlp.hook_out", "blocks.8.resid.delta_mlp"),
        ("ln_final.hook_normalized", "resid.ln_f.normalized"),
    ],
)
def test_transformer_lens_hook_names(tl: str, ours: str) -> None:
    assert hook_point_for(tl) == ours


def test_hook_names_depend_on_the_family_layout() -> None:
    parallel = HookConventions(parallel_attn_mlp=True)
    assert hook_point_for("blocks.3.hook_mlp_in", parallel) == "blocks.2.resid.post_mlp"
    with pytest.raises(ValueError, match="in parallel"):
        hook_point_for("blocks.3.hook_resid_mid", parallel)
    post_norms = HookConventions(norms_after_sublayers=True)
    assert hook_point_for("blocks.3.hook_mlp_out", post_norms) == "blocks.3.resid.delta_mlp"
    with pytest.raises(ValueError, match="norm after the MLP"):
        hook_point_for("blocks.3.mlp.hook_out", post_norms)
    for bad in ("hook_embed", "blocks.1.attn.hook_rot_q", "blocks.x.hook_resid_pre"):
        with pytest.raises(ValueError, match=r"known: 'blocks\.L\.' \+ one of hook_resid_pre") as e:
            hook_point_for(bad)
        assert "\n" not in str(e.value)


# ------------------------------------------ layouts SAELens converts: Qwen Scope, dictionary_learning


def _saelens_reference(loader: Any, repo: str, sub: str, root: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Any:
    """sae-lens' own converter for a layout, its download pointed at the files under `root`."""
    import sae_lens
    from sae_lens.loading import pretrained_sae_loaders as loaders

    def fake_download(repo_id: str, filename: str, subfolder: str | None = None, **_: Any) -> str:
        return str(root / repo_id / (subfolder or "") / filename)

    monkeypatch.setattr(loaders, "hf_hub_download", fake_download)
    cfg, state, _ = loader(repo, sub, cfg_overrides=overrides or None)
    ref = sae_lens.SAE.from_dict(loaders.handle_config_defaulting(cfg))
    ref.load_state_dict(state)
    return ref


def test_qwen_scope_matches_sae_lens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_lens.loading.pretrained_sae_loaders import qwen_scope_sae_huggingface_loader

    repo = "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_5"
    g = rng(11)
    file = tmp_path / repo / "layer3.sae.pt"
    file.parent.mkdir(parents=True)
    torch.save(
        {
            "W_enc": torch.from_numpy(g.standard_normal((64, 16)).astype(np.float32) / 4),
            "W_dec": torch.from_numpy(g.standard_normal((16, 64)).astype(np.float32) / 8),
            "b_enc": torch.from_numpy(g.standard_normal(64).astype(np.float32) * 0.3),
            "b_dec": torch.from_numpy(g.standard_normal(16).astype(np.float32) * 0.3),
        },
        file,
    )
    ref = _saelens_reference(qwen_scope_sae_huggingface_loader, repo, "layer3.sae.pt", tmp_path, monkeypatch, d_in=16, d_sae=64)
    ours = load_sae(file)  # k comes from the repository name in the path
    assert ours.activation == "topk" and ours.k == 5 and ours.reads == "blocks.3.resid.post_mlp"
    x = torch.from_numpy(g.standard_normal((4, 16)).astype(np.float32))
    close(ours.encode(x), ref.encode(x).detach())
    close(ours.decode(ours.encode(x)), ref.decode(ref.encode(x)).detach())


def _dictionary_learning_files(dict_class: str, d_in: int, d_sae: int, g: np.random.Generator) -> dict[str, torch.Tensor]:
    """What dictionary_learning's classes save (their state_dict names)."""

    def t(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.from_numpy((g.standard_normal(shape) * scale).astype(np.float32))

    enc, dec = t(d_sae, d_in, scale=1 / math.sqrt(d_in)), t(d_in, d_sae, scale=1 / math.sqrt(d_sae))
    if dict_class == "AutoEncoder":
        return {"encoder.weight": enc, "encoder.bias": t(d_sae), "decoder.weight": dec, "bias": t(d_in)}
    if dict_class == "GatedAutoEncoder":
        return {"encoder.weight": enc, "decoder.weight": dec, "decoder_bias": t(d_in), "r_mag": t(d_sae, scale=0.2), "gate_bias": t(d_sae), "mag_bias": t(d_sae)}
    if dict_class == "JumpReluAutoEncoder":
        return {"W_enc": enc.T.contiguous(), "b_enc": t(d_sae), "W_dec": dec.T.contiguous(), "b_dec": t(d_in), "threshold": torch.rand(d_sae) * 0.4}
    out = {"encoder.weight": enc, "encoder.bias": t(d_sae), "decoder.weight": dec, "b_dec": t(d_in), "k": torch.tensor(6)}
    out["threshold"] = torch.tensor(0.2) if "Batch" in dict_class else torch.tensor(-1.0)
    return out


@pytest.mark.parametrize("dict_class", ["AutoEncoder", "AutoEncoderTopK", "GatedAutoEncoder", "BatchTopKSAE", "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"])
def test_dictionary_learning_matches_sae_lens(dict_class: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_lens.loading.pretrained_sae_loaders import dictionary_learning_sae_huggingface_loader_1

    repo, sub = "canrager/saebench_gemma-2-2b", f"{dict_class}/trainer_0"
    folder = tmp_path / repo / sub
    folder.mkdir(parents=True)
    trainer = {"dict_class": dict_class, "activation_dim": 16, "dict_size": 48, "layer": 5, "lm_name": "google/gemma-2-2b", "k": 6}
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"ctx_len": 128}}))
    torch.save(_dictionary_learning_files(dict_class, 16, 48, rng(12)), folder / "ae.pt")
    ref = _saelens_reference(dictionary_learning_sae_huggingface_loader_1, repo, sub, tmp_path, monkeypatch)
    ours = load_sae(folder)
    assert detect_format(folder) == "dictionary_learning" and ours.reads == "blocks.5.resid.post_mlp"
    x = torch.from_numpy(rng(13).standard_normal((5, 16)).astype(np.float32))
    latents = ours.encode(x)
    close(latents, ref.encode(x).detach())
    assert 0 < (latents > 0).float().mean() < 1
    close(ours.decode(latents), ref.decode(ref.encode(x)).detach())
