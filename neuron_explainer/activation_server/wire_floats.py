"""Tensors on the wire: how their floats are written into JSON.

Most tensors go exactly (`short_floats`: each float32 value in the fewest digits that read back
as the same float32). The sums a top-k step keeps per token pair are the one term of an answer
that grows with the square of the prompt (the original client's `componentSumsForTokenDisplay`:
~262k numbers at 512 tokens); they are only summed and coloured, so they go at a display
resolution (`display_floats`): a fixed step of 10^-5 of the tensor's largest magnitude, which
keeps any sum of its entries to ~1e-5 of that magnitude per hundred entries summed, and writes
each value in at most 5 significant digits (small ones in fewer, zero as 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neuron_explainer.activation_server import schemas as S

DISPLAY_DIGITS = 5  # display resolution: 10^-DISPLAY_DIGITS of the largest magnitude
# powers of ten up to this are exact doubles: round(x * 10^k) / 10^k is then the nearest double
# to a decimal, which prints as that decimal
_EXACT_POWER = 22
_SMALL = 2048  # values: below, short_floats prints and parses


def _sent_as_minus_999(x: Tensor) -> Tensor:
    # JSON has no NaN/inf; the original server sent -999 for them
    return torch.where(torch.isfinite(x), x, torch.full_like(x, -999.0))


def short_floats(x: Tensor) -> Tensor:
    """float64 values that round back to exactly the given float32 values and print in at most 9
    significant digits (always enough for float32) wherever the powers of ten involved are
    exact doubles, from 1e-14 to 1e30; outside, a value keeps its float64 expansion. The JSON of
    a tensor is about 40% shorter and no value changes. NaN and infinities become -999.

    Small tensors (most of an answer's, by count) take float32's shortest round-tripping digits
    through numpy's printing and parsing instead: a quarter of the time of the torch arithmetic
    below at a few values, but twenty times its time at a hundred thousand."""
    x32 = x.detach().to("cpu", torch.float32)
    if x32.numel() <= _SMALL:
        shortest = x32.numpy().astype(np.str_).astype(np.float64)
        return _sent_as_minus_999(torch.from_numpy(np.asarray(shortest)))
    x64 = x32.double()
    magnitude = x64.abs()
    nonzero = torch.isfinite(x64) & (magnitude > 0)
    # 10^(8 - exponent), computed exactly where it is a power of ten one can divide by exactly
    k = (8 - torch.floor(torch.log10(torch.where(nonzero, magnitude, 1.0)))).clamp(-300, 300)
    up = torch.pow(10.0, k.clamp(min=0))
    down = torch.pow(10.0, (-k).clamp(min=0))
    rounded = torch.round(x64 * up / down) * down / up
    exact = nonzero & (rounded.float() == x32)
    return _sent_as_minus_999(torch.where(exact, rounded, x64))


def display_floats(x: Tensor, digits: int = DISPLAY_DIGITS) -> Tensor:
    """float64 values on a decimal grid of step 10^(e - digits + 1), e the decimal exponent of
    the largest finite magnitude: each within half a step of its float32 value (so at most
    10^-digits / 2 of the largest), printed in at most `digits` significant digits. NaN and
    infinities become -999; a tensor whose scale has no exact power of ten goes exactly."""
    x64 = x.detach().to("cpu", torch.float32).double()
    finite = torch.isfinite(x64)
    top = float(x64[finite].abs().max()) if bool(finite.any()) else 0.0
    if top == 0.0:
        return short_floats(x)
    k = digits - 1 - math.floor(math.log10(top))
    if abs(k) > _EXACT_POWER:
        return short_floats(x)
    power = 10.0**abs(k)
    on_grid = torch.round(x64 * power) / power if k >= 0 else torch.round(x64 / power) * power
    return _sent_as_minus_999(on_grid + 0.0)  # + 0.0: no "-0.0" for values rounded to zero


def tensor_nd(x: Tensor, display: bool = False) -> Any:
    """The API's TensorND of `x`: exact (`short_floats`), or at display resolution."""
    values = display_floats(x) if display else short_floats(x)
    if x.ndim == 0:
        return S.Tensor0D.model_construct(value=float(values))
    rows = values.tolist()
    if display:  # mostly zeros (the causal mask's half, and what rounds to zero): "0", not "0.0"
        rows = _zeros_as_ints(rows)
    if x.ndim == 1:
        return S.Tensor1D.model_construct(value=rows)
    if x.ndim == 2:
        return S.Tensor2D.model_construct(value=rows)
    return S.Tensor3D.model_construct(value=rows)


def _zeros_as_ints(rows: Any) -> Any:
    if rows and isinstance(rows[0], list):
        return [_zeros_as_ints(r) for r in rows]
    return [v or 0 for v in rows]
