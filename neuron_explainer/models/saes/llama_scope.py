"""Llama Scope's layout (OpenMOSS' lm-saes): `hyperparams.json` + `checkpoints/final.safetensors`.

    hyperparams.json  {"d_model": 4096, "d_sae": 32768, "act_fn": "jumprelu",
                       "jump_relu_threshold": 0.75, "norm_activation": "dataset-wise",
                       "dataset_average_activation_norm": {"in": 29.1, "out": 29.1},
                       "hook_point_in": "blocks.24.hook_resid_post",
                       "hook_point_out": "blocks.24.hook_resid_post",
                       "apply_decoder_bias_to_pre_encoder": false, "use_decoder_bias": true, ...}
    final.safetensors encoder.weight (d_sae, d_model)  encoder.bias (d_sae)
                      decoder.weight (d_model, d_sae)  decoder.bias (d_model)

The SAEs were trained on activations rescaled to norm sqrt(d_model) on average over the
dataset: with s_in = sqrt(d_model) / norm_in and s_out = sqrt(d_model) / norm_out,

    pre     = (s_in * x [- b_dec if apply_decoder_bias_to_pre_encoder]) @ encoder.weight.T + encoder.bias
    latents = relu(pre) * (pre > jump_relu_threshold * s_in)
    out     = (latents @ decoder.weight.T + decoder.bias) / s_out

This is SAELens' Llama Scope loader (whose threshold scaling by s_in is the Llama Scope
authors' own fix of abnormally large L0s, SAELens PR #483), extended with the separate output
factor that transcoders (`-LXTC-`, in and out norms differ) need; for SAEs in = out and the two
agree exactly. `sparsity_include_decoder_norm`, which SAELens ignores, is ignored too;
`top_k` is a training schedule parameter. s_in and s_out are folded into the weights.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.models.saes.files import read_json_object, read_safetensors
from neuron_explainer.models.saes.folding import fold_input_output_scale
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.sparse_coder import SparseCoder, SparseCoderInfo

__all__ = ["HYPERPARAMS_FILE", "LLAMA_SCOPE_WEIGHTS", "load_llama_scope"]

HYPERPARAMS_FILE = "hyperparams.json"
LLAMA_SCOPE_WEIGHTS = "checkpoints/final.safetensors"
_NORM_KEY = "dataset_average_activation_norm."  # newer lm-saes keep the norms in the weights too


def _positive(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{source}: {what} must be a positive number, got {value!r}")
    return float(value)


def _norm_factors(hp: dict[str, Any], extra: dict[str, float], d_model: int, source: str) -> tuple[float, float]:
    mode = hp.get("norm_activation", "dataset-wise")
    if mode == "inference":  # already standardized by lm-saes: no rescaling
        return 1.0, 1.0
    if mode != "dataset-wise":
        raise ValueError(
            f"{source}: norm_activation {mode!r} is not supported ('dataset-wise' or 'inference')"
        )
    norms = hp.get("dataset_average_activation_norm")
    if not isinstance(norms, dict):
        hook_in, hook_out = hp.get("hook_point_in"), hp.get("hook_point_out")
        norms = {"in": extra.get(str(hook_in)), "out": extra.get(str(hook_out))}
    norm_in = _positive(norms.get("in"), "dataset_average_activation_norm.in", source)
    norm_out = _positive(norms.get("out"), "dataset_average_activation_norm.out", source)
    return math.sqrt(d_model) / norm_in, math.sqrt(d_model) / norm_out


def load_llama_scope(
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    source: str | None = None,
) -> SparseCoder:
    """Load a Llama Scope SAE or transcoder folder (see the module docstring). Parameters are
    frozen."""
    path = Path(folder)
    source = source or str(path)
    hp = read_json_object(path / HYPERPARAMS_FILE)
    if hp.get("act_fn", "jumprelu") != "jumprelu":
        raise ValueError(f"{source}: act_fn {hp.get('act_fn')!r} is not supported (jumprelu)")
    if hp.get("use_glu_encoder"):
        raise ValueError(f"{source}: use_glu_encoder is not supported")
    for key in ("d_model", "d_sae"):
        if isinstance(hp.get(key), bool) or not isinstance(hp.get(key), int) or hp[key] < 1:
            raise ValueError(f"{source}: {key} must be a positive integer, got {hp.get(key)!r}")
    d_model, d_sae = int(hp["d_model"]), int(hp["d_sae"])
    threshold = hp.get("jump_relu_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ValueError(f"{source}: jump_relu_threshold must be a number, got {threshold!r}")
    raw = read_safetensors(path / LLAMA_SCOPE_WEIGHTS)
    extra = {key[len(_NORM_KEY) :]: float(raw.pop(key).item()) for key in list(raw) if key.startswith(_NORM_KEY)}
    if "log_jumprelu_threshold" in raw:
        raise ValueError(f"{source}: per-latent log_jumprelu_threshold weights are not supported")
    use_decoder_bias = hp.get("use_decoder_bias", True)
    expected = {"encoder.weight", "encoder.bias", "decoder.weight"} | ({"decoder.bias"} if use_decoder_bias else set())
    if set(raw) != expected:
        raise ValueError(
            f"{source}: {LLAMA_SCOPE_WEIGHTS} should hold {sorted(expected)}, has {sorted(raw)}"
        )
    hook_in, hook_out = hp.get("hook_point_in"), hp.get("hook_point_out")
    transcoder = hook_in != hook_out
    apply_b_dec = bool(hp.get("apply_decoder_bias_to_pre_encoder", False)) and bool(use_decoder_bias)
    s_in, s_out = _norm_factors(hp, extra, d_model, source)
    w: dict[str, Tensor] = {
        "W_enc": raw["encoder.weight"].T.contiguous(),
        "b_enc": raw["encoder.bias"],
        "W_dec": raw["decoder.weight"].T.contiguous(),
        "b_dec": raw["decoder.bias"] if use_decoder_bias else torch.zeros(raw["decoder.weight"].shape[0]),
        "threshold": torch.full((d_sae,), float(threshold) * s_in),
    }
    fold_input_output_scale(w, s_in, s_out, apply_b_dec_to_input=apply_b_dec)
    coder = SparseCoder(
        d_model,
        d_sae,
        activation="jumprelu",
        d_out=int(w["W_dec"].shape[1]),
        transcoder=transcoder,
        apply_b_dec_to_input=apply_b_dec,
        reshape_hook_z=bool(hook_in and str(hook_in).endswith("hook_z")),
        info=SparseCoderInfo(
            format="llama_scope",
            source=source,
            architecture="jumprelu_transcoder" if transcoder else "jumprelu",
            model_name=hp.get("model_name"),
            hook_in=hook_in,
            hook_out=hook_out,
            extra={"norm_scale_in": s_in, "norm_scale_out": s_out},
        ),
        conventions=conventions,
        dtype=dtype,
        device="meta",
    )
    coder.load_weights(w, source=source, device=device)
    return coder.requires_grad_(False)
