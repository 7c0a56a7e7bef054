"""SAELens' own files, loaded by us, compute what SAELens computes.

Every SAE here is built with random weights by sae-lens, saved by sae-lens' own save code
(`save_model`, or `save_inference_model` for training classes) and loaded twice: by sae-lens
(`SAE.load_from_disk`) and by us. Latents, decoded outputs and reconstructions must agree within
1e-5 for every architecture, normalization mode and apply_b_dec_to_input setting.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import sae_lens as sl
import torch
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activation_scaler import ActivationScaler

from neuron_explainer.models.saes import SparseCoder, load_sae
from neuron_explainer.models.saes.saelens_format import load_saelens_folder

ATOL = 1e-5
D_IN, D_SAE, D_OUT = 12, 40, 10
warnings.filterwarnings("ignore", module="sae_lens")


def randomize(sae: Any, seed: int = 0) -> Any:
    """Random weights and biases everywhere, thresholds where some latents fire and some not."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name in ("W_enc", "W_dec", "W_skip"):
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[0] ** 0.5)
            elif name == "threshold":
                p.copy_(torch.rand(p.shape, generator=gen) * 0.6)
            elif name == "r_mag":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    for name, b in sae.named_buffers():
        if name == "topk_threshold":
            b.fill_(0.25)
    return sae


def inputs(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) * 1.5 + 0.2


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=1e-5)


def assert_same_as_saelens(ours: SparseCoder, ref: Any, x: torch.Tensor, *, transcoder: bool = False) -> None:
    latents = ours.encode(x)
    ref_latents = ref.encode(x)
    assert_close(latents, ref_latents)
    fired = (ref_latents > 0).float().mean().item()
    assert 0.0 < fired < 1.0, f"degenerate test: fraction of latents active {fired}"
    # a transcoder's forward includes the skip term; an SAE's decode undoes the normalization
    # with the statistics its own encode kept
    ref_out = ref(x) if transcoder else ref.decode(ref.encode(x))
    assert_close(ours.decode(latents, x), ref_out)
    assert_close(ours(x)[1], ref_out)


def saved(sae: Any, folder: Path) -> Path:
    sae.save_model(folder)
    return folder


def meta(hook: str = "blocks.2.hook_resid_pre", **kw: Any) -> SAEMetadata:
    return SAEMetadata(hook_name=hook, model_name="gpt2-small", **kw)


SAE_CLASSES = {
    "standard": lambda **kw: sl.StandardSAE(sl.StandardSAEConfig(**kw)),
    "topk": lambda **kw: sl.TopKSAE(sl.TopKSAEConfig(k=5, **kw)),
    "jumprelu": lambda **kw: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(**kw)),
    "gated": lambda **kw: sl.GatedSAE(sl.GatedSAEConfig(**kw)),
}
TRANSCODER_CLASSES = {
    "transcoder": lambda **kw: sl.Transcoder(sl.TranscoderConfig(**kw)),
    "skip_transcoder": lambda **kw: sl.SkipTranscoder(sl.SkipTranscoderConfig(**kw)),
    "jumprelu_transcoder": lambda **kw: sl.JumpReLUTranscoder(sl.JumpReLUTranscoderConfig(**kw)),
    "jumprelu_skip_transcoder": lambda **kw: sl.JumpReLUSkipTranscoder(sl.JumpReLUSkipTranscoderConfig(**kw)),
}
NORMS = ("none", "constant_norm_rescale", "layer_norm")


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("arch", list(SAE_CLASSES))
def test_sae_architectures_match_saelens(arch: str, apply_b_dec: bool, norm: str, tmp_path: Path) -> None:
    sae = randomize(
        SAE_CLASSES[arch](
            d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec, normalize_activations=norm, metadata=meta()
        )
    )
    folder = saved(sae, tmp_path / arch)
    ours = load_saelens_folder(folder)
    ref = sl.SAE.load_from_disk(folder)
    assert ours.activation == {"standard": "relu"}.get(arch, arch)
    assert ours.reads == "blocks.1.resid.post_mlp" and ours.writes == ours.reads
    assert not ours.is_transcoder and ours.apply_b_dec_to_input == apply_b_dec
    assert_same_as_saelens(ours, ref, inputs((3, 4, D_IN)))
    assert_same_as_saelens(ours, ref, inputs((D_IN,)))  # no leading dims at all


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", list(TRANSCODER_CLASSES))
def test_transcoders_match_saelens(arch: str, norm: str, tmp_path: Path) -> None:
    tc = randomize(
        TRANSCODER_CLASSES[arch](
            d_in=D_IN,
            d_sae=D_SAE,
            d_out=D_OUT,
            apply_b_dec_to_input=False,
            normalize_activations=norm,
            metadata=meta("blocks.3.ln2.hook_normalized", hook_name_out="blocks.3.hook_mlp_out"),
        )
    )
    folder = saved(tc, tmp_path / arch)
    ours = load_saelens_folder(folder)
    ref = sl.SAE.load_from_disk(folder)
    assert ours.is_transcoder and ours.has_skip == ("skip" in arch)
    assert (ours.n_inputs, ours.n_latents, ours.n_outputs) == (D_IN, D_SAE, D_OUT)
    assert ours.reads == "blocks.3.mlp_ln.normalized" and ours.writes == "blocks.3.resid.delta_mlp"
    assert_same_as_saelens(ours, ref, inputs((2, 5, D_IN)), transcoder=True)
    if ours.has_skip:
        with pytest.raises(ValueError, match="skip connection"):
            ours.decode(ours.encode(inputs((D_IN,))))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", list(SAE_CLASSES))
def test_hook_z_reshaping_matches_saelens(arch: str, norm: str, tmp_path: Path) -> None:
    n_heads, d_head = 3, 4
    sae = randomize(
        SAE_CLASSES[arch](
            d_in=n_heads * d_head,
            d_sae=D_SAE,
            normalize_activations=norm,
            reshape_activations="hook_z",
            metadata=meta("blocks.1.attn.hook_z"),
        )
    )
    folder = saved(sae, tmp_path / arch)
    ours = load_saelens_folder(folder)
    ref = sl.SAE.load_from_disk(folder)
    assert ours.reshape_hook_z and ours.reads == "blocks.1.attn.v_out"
    z = inputs((2, 5, n_heads, d_head))
    assert_same_as_saelens(ours, ref, z)
    assert ours.decode(ours.encode(z), z).shape == z.shape
    assert ours.decoder_directions().shape == (D_SAE, n_heads * d_head)


TRAINING_CLASSES = {
    "standard": lambda: sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())),
    "gated": lambda: sl.GatedTrainingSAE(sl.GatedTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())),
    "jumprelu": lambda: sl.JumpReLUTrainingSAE(sl.JumpReLUTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())),
    "topk": lambda: sl.TopKTrainingSAE(
        sl.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5, rescale_acts_by_decoder_norm=True, metadata=meta())
    ),
    "batchtopk": lambda: sl.BatchTopKTrainingSAE(
        sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5, metadata=meta())
    ),
    "matryoshka_batchtopk": lambda: sl.MatryoshkaBatchTopKTrainingSAE(
        sl.MatryoshkaBatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5, matryoshka_widths=[10, D_SAE], metadata=meta())
    ),
}


@pytest.mark.parametrize("arch", list(TRAINING_CLASSES))
def test_training_checkpoints_match_saelens_inference_models(arch: str, tmp_path: Path) -> None:
    """A training checkpoint (save_model of a training SAE; BatchTopK saved with its
    topk_threshold) loads as what sae-lens' save_inference_model turns it into."""
    sae = randomize(TRAINING_CLASSES[arch]())
    sae.save_model(tmp_path / "checkpoint")
    sae.save_inference_model(tmp_path / "inference")
    ref = sl.SAE.load_from_disk(tmp_path / "inference")
    x = inputs((3, 4, D_IN))
    for folder in ("checkpoint", "inference"):
        ours = load_saelens_folder(tmp_path / folder)
        assert_same_as_saelens(ours, ref, x)
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        assert json.loads((tmp_path / "checkpoint" / "cfg.json").read_text())["architecture"] == arch
        assert ours.activation == "jumprelu"


def test_expected_average_only_in_folds_the_dataset_factor(tmp_path: Path) -> None:
    sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations="expected_average_only_in", metadata=meta())))
    folder = saved(sae, tmp_path / "sae")
    factor = 0.37
    ref = sl.SAE.load_from_disk(folder)
    ref.fold_activation_norm_scaling_factor(factor)  # what SAE.from_pretrained does with the table's factor
    assert_same_as_saelens(load_saelens_folder(folder, norm_scaling_factor=factor), ref, inputs((5, D_IN)))
    with pytest.raises(ValueError, match="norm scaling factor") as e:
        load_saelens_folder(folder)
    assert "\n" not in str(e.value)
    # a training checkpoint carries the factor in activation_scaler.json (sae-lens' own writer)
    ActivationScaler(scaling_factor=factor).save(str(folder / "activation_scaler.json"))
    assert_same_as_saelens(load_saelens_folder(folder), ref, inputs((5, D_IN)))


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("arch", ["standard", "gated", "topk"])
def test_covariance_whitening_checkpoint_is_folded(arch: str, apply_b_dec: bool, tmp_path: Path) -> None:
    sae = randomize(
        SAE_CLASSES[arch](
            d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec, normalize_activations="covariance_whitening", metadata=meta()
        )
    )
    folder = saved(sae, tmp_path / "sae")
    with pytest.raises(ValueError, match=r"activation_whitening\.safetensors"):
        load_saelens_folder(folder)
    data = inputs((400, D_IN), seed=5) @ torch.randn(D_IN, D_IN, generator=torch.Generator().manual_seed(6))
    scaler = ActivationScaler()
    scaler.estimate_whitening(d_in=D_IN, data_provider=iter(data.split(100)), n_batches_for_norm_estimate=4)
    scaler.save(str(folder / "activation_scaler.json"))
    assert scaler.whitening is not None
    ref = sl.SAE.load_from_disk(folder)
    ref.fold_activation_whitening(scaler.whitening.mean, scaler.whitening.matrix, scaler.whitening.inverse_matrix)
    assert_same_as_saelens(load_saelens_folder(folder), ref, data[:20])


# --------------------------------------------------------------------------- older flat configs


def _flat_cfg(**fields: Any) -> dict[str, Any]:
    """A cfg.json as SAELens 3.x wrote it: one flat dict with training fields mixed in."""
    return {
        "model_name": "gpt2-small",
        "hook_point": "blocks.2.hook_resid_pre",
        "hook_point_layer": 2,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "expansion_factor": D_SAE // D_IN,
        "b_dec_init_method": "geometric_median",
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "lr": 4e-4,
        "l1_coefficient": 8e-5,
        "training_tokens": 300_000_000,
        "dtype": "torch.float32",
        "device": "cuda",
        "prepend_bos": True,
        "sae_lens_version": "3.5.0",
        **fields,
    }


def _with_flat_cfg(sae: Any, folder: Path, cfg: dict[str, Any]) -> Path:
    sae.save_model(folder)
    (folder / "cfg.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not ...}))
    return folder


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_flat_config_standard(apply_b_dec: bool, tmp_path: Path) -> None:
    sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())))
    folder = _with_flat_cfg(sae, tmp_path / "old", _flat_cfg(apply_b_dec_to_input=apply_b_dec))
    ours, ref = load_saelens_folder(folder), sl.SAE.load_from_disk(folder)
    assert ours.reads == "blocks.1.resid.post_mlp" and ours.info.extra["sae_lens_version"] == "3.5.0"
    assert_same_as_saelens(ours, ref, inputs((4, D_IN)))


def test_flat_config_topk_and_unversioned_hook_z(tmp_path: Path) -> None:
    topk = randomize(sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4, metadata=meta())))
    folder = _with_flat_cfg(topk, tmp_path / "topk", _flat_cfg(activation_fn_str=..., activation_fn="topk", activation_fn_kwargs={"k": 4}))
    ours = load_saelens_folder(folder)
    assert ours.activation == "topk" and ours.k == 4
    assert_same_as_saelens(ours, sl.SAE.load_from_disk(folder), inputs((4, D_IN)))
    # no version at all (mats_sae_training era): old rules, hook_z reshaping implied by the name
    z_sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, reshape_activations="hook_z", metadata=meta("blocks.4.attn.hook_z"))))
    folder = _with_flat_cfg(z_sae, tmp_path / "z", _flat_cfg(sae_lens_version=..., hook_point="blocks.4.attn.hook_z"))
    ours = load_saelens_folder(folder)
    assert ours.reshape_hook_z and ours.reads == "blocks.4.attn.v_out"
    assert_same_as_saelens(ours, sl.SAE.load_from_disk(folder), inputs((2, 3, 4, D_IN // 4)))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"activation_fn_str": "tanh-relu"}, "activation_fn 'tanh-relu'"),
        ({"normalize_activations": True}, "norm scaling factor"),
        ({"hook_point_head_index": 3}, "hook_head_index"),
        ({"architecture": "temporal"}, "architecture 'temporal' is not supported"),
        ({"d_sae": "many"}, "d_sae must be a positive integer"),
    ],
)
def test_unsupported_fields_are_refused_in_one_line(fields: dict[str, Any], message: str, tmp_path: Path) -> None:
    sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())))
    folder = _with_flat_cfg(sae, tmp_path / "old", _flat_cfg(**fields))
    with pytest.raises(ValueError, match=message) as e:
        load_saelens_folder(folder)
    assert "\n" not in str(e.value)


def test_v6_unsupported_values_are_refused(tmp_path: Path) -> None:
    sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())))
    folder = saved(sae, tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, value, message in [
        ("normalize_activations", "batch_norm", "normalize_activations 'batch_norm'"),
        ("reshape_activations", "hook_q", "reshape_activations 'hook_q'"),
        ("reshape_activations", "hook_z", "not a hook_z"),
        ("apply_b_dec_to_input", "yes", "apply_b_dec_to_input must be true or false"),
    ]:
        (folder / "cfg.json").write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(ValueError, match=message):
            load_saelens_folder(folder)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())))
    folder = saved(sae, tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "jumprelu"}))
    with pytest.raises(ValueError, match=r"missing \['threshold'\]"):
        load_saelens_folder(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_in": D_IN + 1}))
    with pytest.raises(ValueError, match="W_enc has shape"):
        load_saelens_folder(folder)


def test_center_writing_weights_centers_residual_inputs(tmp_path: Path) -> None:
    """Trained on TransformerLens with center_writing_weights: the residual it saw is ours
    minus its mean (sae-lens leaves that to the model; we reproduce it in the SAE)."""
    sae = randomize(
        sl.StandardSAE(
            sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta(model_from_pretrained_kwargs={"center_writing_weights": True}))
        )
    )
    folder = saved(sae, tmp_path / "sae")
    ours, ref = load_sae(folder), sl.SAE.load_from_disk(folder)
    x = inputs((3, D_IN))
    assert ours.center_input
    assert_close(ours.encode(x), ref.encode(x - x.mean(-1, keepdim=True)))
    from neuron_explainer.models.saes import HookConventions

    assert not ours.place(HookConventions(rms_norm=True)).center_input  # TL skips it for RMSNorm


def test_fold_value_biases_on_hook_z_is_refused(tmp_path: Path) -> None:
    sae = randomize(
        sl.StandardSAE(
            sl.StandardSAEConfig(
                d_in=D_IN, d_sae=D_SAE, reshape_activations="hook_z",
                metadata=meta("blocks.0.attn.hook_z", model_from_pretrained_kwargs={"fold_value_biases": True}),
            )
        )
    )
    with pytest.raises(ValueError, match="fold_value_biases"):
        load_saelens_folder(saved(sae, tmp_path / "sae"))


def test_sparsity_file_and_frozen_parameters(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta())))
    folder = saved(sae, tmp_path / "sae")
    log_density = -torch.rand(D_SAE) * 5
    save_file({"sparsity": log_density}, folder / "sparsity.safetensors")
    ours = load_saelens_folder(folder, dtype=torch.float64)
    assert ours.log_feature_density is not None
    torch.testing.assert_close(ours.log_feature_density, log_density)
    assert ours.dtype == torch.float64 and not any(p.requires_grad for p in ours.parameters())
    x = inputs((4, D_IN), seed=3).requires_grad_(True)
    ours.encode(x).sum().backward()  # gradients still flow through to the input
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("norm", NORMS)
def test_output_scale_is_what_each_latent_writes(norm: str, tmp_path: Path) -> None:
    """decode is affine in the latents at a fixed input: latent i adds
    output_scale(x) * W_dec[i] per unit (the write direction the debugger needs)."""
    sae = randomize(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations=norm, metadata=meta())))
    ours = load_saelens_folder(saved(sae, tmp_path / "sae"))
    x = inputs((3, D_IN))
    latents = ours.encode(x)
    bumped = latents.clone()
    bumped[..., 7] += 2.0
    delta = ours.decode(bumped, x) - ours.decode(latents, x)
    assert_close(delta, 2.0 * ours.output_scale(x) * ours.decoder_directions()[7])
    assert ours.decode_needs_input == (norm != "none")
    if norm != "none":
        with pytest.raises(ValueError, match="decode needs the encoded input x"):
            ours.decode(latents)


def test_module_refuses_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="topk needs an integer"):
        SparseCoder(4, 8, activation="topk")
    with pytest.raises(ValueError, match="must equal d_in"):
        SparseCoder(4, 8, d_out=5)
    with pytest.raises(ValueError, match="not computed at inference"):
        SparseCoder(4, 8, normalize_activations="expected_average_only_in")
    coder = SparseCoder(4, 8)
    with pytest.raises(ValueError, match="reads 4 inputs"):
        coder.encode(torch.zeros(2, 5))
