"""The input normalizations SAELens computes at inference (its `normalize_activations`).

    "none"                   x
    "constant_norm_rescale"  x * sqrt(d_in) / ||x||           decoded output / the same factor
    "layer_norm"             (x - mean) / (std + 1e-5)         decoded output * std + mean
                             (std is torch's unbiased std of x - mean over the last dimension)

Both non-trivial modes depend on each input vector, so an SAE's output needs the input's
statistics (SAELens keeps them from the last encode call; we recompute them from the input).

SAELens' other two modes are constants of the dataset, not of the input: "expected_average_only_in"
multiplies inputs by one dataset-wide factor, and "covariance_whitening" applies a dataset-wide
affine map. SAELens' own training folds both into the weights before saving (and then writes
"none"); a file that still names them needs the factor or the whitening statistics, which
`folding.py` folds in the same way when they are known.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["FOLDED_NORMALIZATIONS", "RUNTIME_NORMALIZATIONS", "Normalizer"]

RUNTIME_NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
FOLDED_NORMALIZATIONS = ("expected_average_only_in", "covariance_whitening")

_LAYER_NORM_EPS = 1e-5  # SAELens' run_time_activation_ln_in default


class Normalizer:
    """Normalizes encoder inputs and undoes it on decoder outputs (stateless: the statistics are
    recomputed from the input each time)."""

    def __init__(self, mode: str) -> None:
        if mode not in RUNTIME_NORMALIZATIONS:
            raise ValueError(f"unknown normalization {mode!r}; supported: {list(RUNTIME_NORMALIZATIONS)}")
        self.mode = mode

    @property
    def input_dependent(self) -> bool:
        return self.mode != "none"

    def normalize(self, x: Tensor) -> Tensor:
        if self.mode == "constant_norm_rescale":
            return x * (math.sqrt(x.shape[-1]) / x.norm(dim=-1, keepdim=True))
        if self.mode == "layer_norm":
            centered = x - x.mean(dim=-1, keepdim=True)
            return centered / (centered.std(dim=-1, keepdim=True) + _LAYER_NORM_EPS)
        return x

    def denormalize(self, out: Tensor, x: Tensor) -> Tensor:
        """Undo `normalize(x)` on a decoder output `out` (same leading shape as x)."""
        if self.mode == "constant_norm_rescale":
            return out / (math.sqrt(x.shape[-1]) / x.norm(dim=-1, keepdim=True))
        if self.mode == "layer_norm":
            mean = x.mean(dim=-1, keepdim=True)
            return out * (x - mean).std(dim=-1, keepdim=True) + mean
        return out

    def output_scale(self, x: Tensor) -> Tensor:
        """(..., 1): the factor `denormalize` applies to the linear part of the output."""
        if self.mode == "constant_norm_rescale":
            return x.norm(dim=-1, keepdim=True) / math.sqrt(x.shape[-1])
        if self.mode == "layer_norm":
            return (x - x.mean(dim=-1, keepdim=True)).std(dim=-1, keepdim=True)
        return x.new_ones(*x.shape[:-1], 1)
