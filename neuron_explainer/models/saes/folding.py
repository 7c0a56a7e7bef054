"""Folding constants of a file into the weights, so the module computes only plain formulas.

Every fold here is an exact identity on the encoder's pre-activations and the decoder's output
(up to float rounding), and each mirrors the SAELens function named in its docstring. Weights
are dicts of SAELens' parameter names (see sparse_coder.py), changed in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fold_decoder_norm", "fold_input_output_scale", "fold_whitening"]


@torch.no_grad()
def fold_decoder_norm(w: dict[str, Tensor]) -> None:
    """TopK `rescale_acts_by_decoder_norm`: pre-activations are multiplied by each decoder row's
    norm and latents divided by it before decoding. Folded (SAELens' `_fold_norm_topk`): unit
    decoder rows, encoder and its bias scaled by the norms (pre-activations then equal the
    rescaled ones, so a threshold on them stays as it is)."""
    norms = w["W_dec"].norm(dim=-1)
    w["W_dec"] = w["W_dec"] / norms[:, None]
    w["W_enc"] = w["W_enc"] * norms[None, :]
    w["b_enc"] = w["b_enc"] * norms


@torch.no_grad()
def fold_input_output_scale(
    w: dict[str, Tensor], scale_in: float, scale_out: float, *, apply_b_dec_to_input: bool
) -> None:
    """Inputs multiplied by `scale_in` before encoding, outputs divided by `scale_out` after
    decoding (SAELens' `fold_activation_norm_scaling_factor` is scale_in == scale_out; Llama
    Scope transcoders have two). Pre-activations are unchanged, so thresholds stay."""
    if apply_b_dec_to_input and scale_in != scale_out:
        raise ValueError(
            "cannot fold different input and output norm scales when b_dec is also subtracted "
            "from the input"
        )
    w["W_enc"] = w["W_enc"] * scale_in
    w["W_dec"] = w["W_dec"] / scale_out
    w["b_dec"] = w["b_dec"] / scale_out


@torch.no_grad()
def fold_whitening(
    w: dict[str, Tensor],
    mean: Tensor,
    matrix: Tensor,
    inverse: Tensor,
    *,
    apply_b_dec_to_input: bool,
) -> None:
    """SAELens' "covariance_whitening": the SAE saw z = (x - mean) @ matrix and its outputs were
    mapped back with z_hat @ inverse + mean. Folded as SAELens' `fold_activation_whitening`
    (computed in float64, then cast back)."""
    dtype = w["W_enc"].dtype
    f64 = {key: value.to(torch.float64) for key, value in w.items()}
    mean, matrix, inverse = (t.to(torch.float64) for t in (mean, matrix, inverse))
    f64["W_enc"] = matrix @ f64["W_enc"]
    if not apply_b_dec_to_input:
        shift = mean @ f64["W_enc"]
        if "b_enc" in f64:
            f64["b_enc"] = f64["b_enc"] - shift
        if "b_gate" in f64:
            f64["b_gate"] = f64["b_gate"] - shift
            f64["b_mag"] = f64["b_mag"] - shift * f64["r_mag"].exp()
    f64["W_dec"] = f64["W_dec"] @ inverse
    f64["b_dec"] = f64["b_dec"] @ inverse + mean
    for key, value in f64.items():
        w[key] = value.to(dtype)
