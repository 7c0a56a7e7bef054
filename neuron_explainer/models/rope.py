"""Rotary position embeddings (RoPE), in the "rotate half" layout every supported family uses.

Each head's first `rotary_dims` dimensions are split into two halves (x1, x2); at position p,
frequency i rotates the pair (x1[i], x2[i]) by the angle p * inv_freq[i]. Dimensions past
`rotary_dims` pass through unchanged (Pythia rotates only a quarter of each head).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

# rope_type values we compute; anything else is refused (never rotated wrongly).
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def inverse_frequencies(dims: int, theta: float, scaling: Mapping[str, Any] | None) -> Tensor:
    """(dims / 2,) float32 angles per position, with the checkpoint's rope scaling applied."""
    # on the CPU even while a model is built on the meta device: it is computed, not loaded
    inv_freq = 1.0 / theta ** (torch.arange(0, dims, 2, dtype=torch.int64, device="cpu").float() / dims)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"rope scaling {kind!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    assert scaling is not None or kind == "default"
    if kind == "linear":
        return inv_freq / float(scaling["factor"])  # type: ignore[index]
    if kind == "llama3":
        return _llama3(inv_freq, scaling)  # type: ignore[arg-type]
    return inv_freq


def _llama3(inv_freq: Tensor, s: Mapping[str, Any]) -> Tensor:
    """Llama 3.1's scaling: long wavelengths are slowed down by `factor`, short ones kept, and
    the band between the two interpolated smoothly."""
    factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    context = float(s["original_max_position_embeddings"])
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= context / high) & (wavelength <= context / low)
    return torch.where(medium, blended, scaled)


def cos_sin(inv_freq: Tensor, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(b, s, rotary_dims) cosines and sines for integer positions (b, s)."""
    angles = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (b, s, heads, d_head); cos, sin: (b, s, rotary_dims)."""
    dims = cos.shape[-1]
    rot, rest = x[..., :dims], x[..., dims:]
    half = dims // 2
    rotated_half = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    out = rot * cos[:, :, None] + rotated_half * sin[:, :, None]
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out
