"""SAELens' folder layout: `cfg.json` + `sae_weights.safetensors` [+ `sparsity.safetensors`].

Two config shapes exist. SAELens 6 writes a nested one:

    {"architecture": "jumprelu", "d_in": 768, "d_sae": 24576, "dtype": "float32",
     "apply_b_dec_to_input": true, "normalize_activations": "none", "reshape_activations": "none",
     "k": 32, "rescale_acts_by_decoder_norm": false,          # topk
     "d_out": 768,                                             # transcoders
     "metadata": {"sae_lens_version": "6.5.1", "model_name": "gpt2-small",
                  "hook_name": "blocks.8.hook_resid_pre", "hook_name_out": ...,
                  "hook_head_index": null, "model_from_pretrained_kwargs": {...}, ...}}

Older releases (no version, or a version below 6) wrote one flat dict: `hook_point` for
`hook_name`, `hook_point_head_index`, `activation_fn` / `activation_fn_str` ("relu", or "topk"
with `activation_fn_kwargs: {"k": ...}`), `normalize_activations` as a bool (true meaning
"expected_average_only_in"), no `architecture` (standard), `apply_b_dec_to_input` defaulting to
true and `reshape_activations` to "hook_z" for hook_z names; plus many training-only fields,
which are ignored (as SAELens' `handle_pre_6_0_config` does).

Weights use SAELens' parameter names. Training checkpoints are read too: `log_threshold`
(older JumpReLU) becomes `threshold = exp(log_threshold)`; a BatchTopK (or Matryoshka
BatchTopK) checkpoint's `topk_threshold` becomes the JumpReLU threshold it is used as at
inference, after folding the decoder norms, exactly as SAELens' `save_inference_model` does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.models.saes.files import read_json_object, read_safetensors
from neuron_explainer.models.saes.folding import (
    fold_decoder_norm,
    fold_input_output_scale,
    fold_whitening,
)
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.normalization import RUNTIME_NORMALIZATIONS
from neuron_explainer.models.saes.sparse_coder import Activation, SparseCoder, SparseCoderInfo

__all__ = [
    "ARCHITECTURES",
    "CFG_FILE",
    "SPARSITY_FILE",
    "WEIGHTS_FILE",
    "SAELensConfig",
    "load_saelens_folder",
    "parse_saelens_config",
    "sparse_coder_from_saelens",
]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
SCALER_FILE = "activation_scaler.json"  # training checkpoints: dataset normalization statistics
WHITENING_FILE = "activation_whitening.safetensors"

# architecture -> (activation, transcoder, skip)
ARCHITECTURES: dict[str, tuple[Activation, bool, bool]] = {
    "standard": ("relu", False, False),
    "topk": ("topk", False, False),
    "batchtopk": ("jumprelu", False, False),
    "matryoshka_batchtopk": ("jumprelu", False, False),
    "jumprelu": ("jumprelu", False, False),
    "gated": ("gated", False, False),
    "transcoder": ("relu", True, False),
    "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}
_BATCHTOPK = ("batchtopk", "matryoshka_batchtopk")
_OLD_RENAMES = {
    "hook_point": "hook_name",
    "hook_point_head_index": "hook_head_index",
    "activation_fn_str": "activation_fn",
}


@dataclass
class SAELensConfig:
    """The fields of a cfg.json that change what the SAE computes, in SAELens 6 terms."""

    architecture: str
    d_in: int
    d_sae: int
    d_out: int | None = None
    k: int | None = None
    rescale_acts_by_decoder_norm: bool = False
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    reshape_activations: str = "none"
    hook_name: str | None = None
    hook_name_out: str | None = None
    model_name: str | None = None
    model_from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)
    sae_lens_version: str | None = None


def _major_version(version: Any) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def _int_field(d: dict[str, Any], key: str, source: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}")
    return value


def parse_saelens_config(raw: dict[str, Any], *, source: str) -> SAELensConfig:
    """Read a cfg.json dict (either shape; see the module docstring). Raises a one-line
    ValueError for any value whose meaning we do not reproduce."""
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{source}: metadata must be an object, got {type(metadata).__name__}")
    d = {**raw, **{k: v for k, v in metadata.items() if k not in raw}}
    version = d.get("sae_lens_version")
    major = _major_version(version) if version else None
    old = major is None or major < 6
    if old:
        d = {_OLD_RENAMES.get(k, k): v for k, v in d.items()}
        d.setdefault("apply_b_dec_to_input", True)
        d.setdefault("architecture", "standard")
        activation_fn = d.get("activation_fn") or "relu"
        kwargs = d.get("activation_fn_kwargs") or {}
        if activation_fn == "topk" and isinstance(kwargs, dict) and kwargs.get("k") is not None:
            d["architecture"], d["k"] = "topk", kwargs["k"]
        elif activation_fn != "relu":
            raise ValueError(
                f"{source}: activation_fn {activation_fn!r} is not supported (relu, or topk with "
                "activation_fn_kwargs.k)"
            )
        if isinstance(d.get("normalize_activations"), bool):
            d["normalize_activations"] = "expected_average_only_in" if d["normalize_activations"] else "none"
        d.setdefault("reshape_activations", "hook_z" if "hook_z" in str(d.get("hook_name") or "") else "none")
    architecture = d.get("architecture", "standard")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"{source}: architecture {architecture!r} is not supported; supported: {list(ARCHITECTURES)}"
        )
    activation, transcoder, _ = ARCHITECTURES[architecture]
    if d.get("activation_fn") not in (None, "relu", "topk"):
        raise ValueError(f"{source}: activation_fn {d['activation_fn']!r} is not supported")
    cfg = SAELensConfig(
        architecture=architecture,
        d_in=_int_field(d, "d_in", source),
        d_sae=_int_field(d, "d_sae", source),
        d_out=_int_field(d, "d_out", source) if transcoder and "d_out" in d else None,
        apply_b_dec_to_input=d.get("apply_b_dec_to_input", True),
        normalize_activations=d.get("normalize_activations") or "none",
        reshape_activations=d.get("reshape_activations") or "none",
        hook_name=d.get("hook_name"),
        hook_name_out=d.get("hook_name_out"),
        model_name=d.get("model_name"),
        model_from_pretrained_kwargs=d.get("model_from_pretrained_kwargs") or {},
        sae_lens_version=str(version) if version else None,
    )
    if not isinstance(cfg.apply_b_dec_to_input, bool):
        raise ValueError(f"{source}: apply_b_dec_to_input must be true or false, got {cfg.apply_b_dec_to_input!r}")
    if architecture == "topk":
        cfg.k = _int_field(d, "k", source)
    if activation == "topk" or architecture in _BATCHTOPK:
        rescale = d.get("rescale_acts_by_decoder_norm", False)
        if not isinstance(rescale, bool):
            raise ValueError(f"{source}: rescale_acts_by_decoder_norm must be a bool, got {rescale!r}")
        cfg.rescale_acts_by_decoder_norm = rescale
    if cfg.reshape_activations not in ("none", "hook_z"):
        raise ValueError(
            f"{source}: reshape_activations {cfg.reshape_activations!r} is not supported ('none' or 'hook_z')"
        )
    if cfg.reshape_activations == "hook_z" and cfg.hook_name and not cfg.hook_name.endswith("_z"):
        raise ValueError(f"{source}: reshape_activations 'hook_z' on {cfg.hook_name!r}, which is not a hook_z")
    if d.get("hook_head_index") is not None:
        raise ValueError(
            f"{source}: SAEs on one head's slice (hook_head_index={d['hook_head_index']!r}) are not supported"
        )
    if transcoder and cfg.apply_b_dec_to_input:
        raise ValueError(f"{source}: apply_b_dec_to_input is not supported for transcoders (as in SAELens)")
    if transcoder and cfg.reshape_activations == "hook_z":
        raise ValueError(f"{source}: reshape_activations 'hook_z' is not supported for transcoders")
    return cfg


def _prepare_weights(cfg: SAELensConfig, w: dict[str, Tensor], *, source: str) -> None:
    """Convert a file's weights, in place, into the plain formulas of sparse_coder.py."""
    scaling = w.pop("scaling_factor", None)
    if scaling is not None and not torch.allclose(scaling, torch.ones_like(scaling)):
        raise ValueError(f"{source}: a finetuning scaling_factor other than 1 is not supported")
    if "finetuning_scaling_factor" in w:
        raise ValueError(f"{source}: finetuning_scaling_factor weights are not supported")
    if "log_threshold" in w:
        w["threshold"] = w.pop("log_threshold").exp()
    if cfg.rescale_acts_by_decoder_norm:
        fold_decoder_norm(w)
    if cfg.architecture in _BATCHTOPK:
        if "topk_threshold" not in w or w["topk_threshold"].numel() != 1:
            raise ValueError(f"{source}: a {cfg.architecture} checkpoint needs a scalar topk_threshold")
        w["threshold"] = torch.ones_like(w["b_enc"]) * w.pop("topk_threshold").item()


def _dataset_normalization(
    cfg: SAELensConfig,
    w: dict[str, Tensor],
    folder: Path | None,
    norm_scaling_factor: float | None,
    *,
    transcoder: bool,
    source: str,
) -> None:
    """Fold a dataset-wide normalization into the weights (see normalization.py)."""
    mode = cfg.normalize_activations
    if mode == "expected_average_only_in":
        factor = norm_scaling_factor
        if factor is None and folder is not None and (folder / SCALER_FILE).exists():
            factor = read_json_object(folder / SCALER_FILE).get("scaling_factor")
        if factor is None:
            raise ValueError(
                f"{source}: normalize_activations 'expected_average_only_in' needs the dataset's "
                f"norm scaling factor, which neither the release table nor {SCALER_FILE} gives; "
                "pass norm_scaling_factor="
            )
        if transcoder:
            raise ValueError(f"{source}: 'expected_average_only_in' is not supported for transcoders")
        if not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"{source}: norm scaling factor must be a positive number, got {factor!r}")
        fold_input_output_scale(w, float(factor), float(factor), apply_b_dec_to_input=cfg.apply_b_dec_to_input)
    elif mode == "covariance_whitening":
        if folder is None or not (folder / WHITENING_FILE).exists():
            raise ValueError(
                f"{source}: normalize_activations 'covariance_whitening' needs {WHITENING_FILE} "
                "(the whitening statistics), which is not in the folder"
            )
        if transcoder:
            raise ValueError(f"{source}: 'covariance_whitening' is not supported for transcoders")
        stats = read_safetensors(folder / WHITENING_FILE)
        if set(stats) != {"mean", "matrix", "inverse_matrix"}:
            raise ValueError(f"{source}: {WHITENING_FILE} must hold mean, matrix and inverse_matrix")
        fold_whitening(
            w, stats["mean"], stats["matrix"], stats["inverse_matrix"],
            apply_b_dec_to_input=cfg.apply_b_dec_to_input,
        )
    elif mode not in RUNTIME_NORMALIZATIONS:
        raise ValueError(
            f"{source}: normalize_activations {mode!r} is not supported; supported: "
            f"{[*RUNTIME_NORMALIZATIONS, 'expected_average_only_in', 'covariance_whitening']}"
        )


def sparse_coder_from_saelens(
    raw: dict[str, Any],
    weights: dict[str, Tensor],
    *,
    folder: Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    norm_scaling_factor: float | None = None,
    source: str,
    fmt: str = "saelens",
) -> SparseCoder:
    """A frozen coder from a cfg.json dict and weights with SAELens' names (also used by the
    layouts SAELens converts to its own, see dictionary_learning.py and qwen_scope.py).
    `folder`, when given, is searched for a training checkpoint's normalization statistics."""
    cfg = parse_saelens_config(raw, source=source)
    activation, transcoder, skip = ARCHITECTURES[cfg.architecture]
    _prepare_weights(cfg, weights, source=source)
    _dataset_normalization(cfg, weights, folder, norm_scaling_factor, transcoder=transcoder, source=source)
    d_out = cfg.d_out
    if transcoder and "W_dec" in weights:
        d_out = d_out or int(weights["W_dec"].shape[-1])
    info = SparseCoderInfo(
        format=fmt,
        source=source,
        architecture=cfg.architecture,
        model_name=cfg.model_name,
        hook_in=cfg.hook_name,
        hook_out=cfg.hook_name_out if transcoder else cfg.hook_name,
        model_from_pretrained_kwargs=dict(cfg.model_from_pretrained_kwargs),
        extra={"sae_lens_version": cfg.sae_lens_version},
    )
    coder = SparseCoder(
        cfg.d_in,
        cfg.d_sae,
        activation=activation,
        d_out=d_out,
        transcoder=transcoder,
        skip=skip,
        k=cfg.k,
        apply_b_dec_to_input=cfg.apply_b_dec_to_input,
        normalize_activations=cfg.normalize_activations if cfg.normalize_activations in RUNTIME_NORMALIZATIONS else "none",
        reshape_hook_z=cfg.reshape_activations == "hook_z",
        info=info,
        conventions=conventions,
        dtype=dtype,
        device="meta",
    )
    coder.load_weights(weights, source=source, device=device)
    return coder.requires_grad_(False)


def load_saelens_folder(
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    config_overrides: dict[str, Any] | None = None,
    norm_scaling_factor: float | None = None,
    source: str | None = None,
) -> SparseCoder:
    """Load an SAE or transcoder saved by SAELens (`SAE.save_model`, `save_inference_model`, a
    training checkpoint, or an older release). `config_overrides` are applied to cfg.json first
    (the release table's, as SAELens does); `norm_scaling_factor` is the release table's
    dataset factor for "expected_average_only_in". Parameters are frozen."""
    path = Path(folder)
    source = source or str(path)
    raw = read_json_object(path / CFG_FILE)
    raw.update(config_overrides or {})
    coder = sparse_coder_from_saelens(
        raw,
        read_safetensors(path / WEIGHTS_FILE),
        folder=path,
        dtype=dtype,
        device=device,
        conventions=conventions,
        norm_scaling_factor=norm_scaling_factor,
        source=source,
    )
    if (path / SPARSITY_FILE).exists():
        sparsity = read_safetensors(path / SPARSITY_FILE).get("sparsity")
        if sparsity is None or tuple(sparsity.shape) != (coder.n_latents,):
            raise ValueError(f"{source}: {SPARSITY_FILE} must hold 'sparsity' of shape ({coder.n_latents},)")
        coder.log_feature_density = sparsity.to(device=coder.device)
    return coder
