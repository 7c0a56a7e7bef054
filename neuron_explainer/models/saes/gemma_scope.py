"""Gemma Scope's layout: one `params.npz` per SAE (or transcoder), JumpReLU.

    W_enc (d_in, n_latents)   W_dec (n_latents, d_out)   b_enc (n_latents)   b_dec (d_out)
    threshold (n_latents)

    latents = relu(x @ W_enc + b_enc) * (x @ W_enc + b_enc > threshold)
    out     = latents @ W_dec + b_dec

(DeepMind's published formula; no input normalization, b_dec is not subtracted from the input.)

The file does not say what it reads. The published repositories do, through their names:
`google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz` is an SAE on
`blocks.12.hook_resid_post`; `-mlp` on `hook_mlp_out`; `-att` on `attn.hook_z` (heads
flattened); `-transcoders` read the MLP's normed input (SAELens names it
`blocks.L.ln2.hook_normalized`) and write `hook_mlp_out`. `gemma_scope_hooks` reads that from a
repository id and folder (or a local path inside the Hugging Face cache, whose folder names
carry the repository id); pass `hook_in` / `hook_out` / `transcoder` to say it yourself.
Embedding SAEs are refused: SAELens rescales them to run on the unscaled token embedding, for
which we have no hook point.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from neuron_explainer.models.saes.files import read_npz
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.sparse_coder import SparseCoder, SparseCoderInfo

__all__ = ["PARAMS_FILE", "GemmaScopeHooks", "gemma_scope_hooks", "load_gemma_scope", "sparse_coder_from_npz_weights"]

PARAMS_FILE = "params.npz"
_KEYS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")


@dataclass(frozen=True)
class GemmaScopeHooks:
    transcoder: bool
    hook_in: str | None
    hook_out: str | None


_REPO = re.compile(r"gemma-scope-[\w.-]+?-(res|mlp|att|transcoders)(?![a-z])")
_LAYER = re.compile(r"(?:^|/)layer_(\d+)(?:/|$)")
_SITES = {"res": "hook_resid_post", "mlp": "hook_mlp_out", "att": "attn.hook_z"}


def gemma_scope_hooks(location: str) -> GemmaScopeHooks:
    """What a Gemma Scope file reads and writes, from its repository id and folder names
    (e.g. "google/gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_14"); None when the
    names do not say."""
    text = location.replace("\\", "/").replace("--", "/")  # hub cache: models--google--gemma-scope-...
    repo, layer = _REPO.search(text), _LAYER.search(text)
    if repo is None or layer is None:
        return GemmaScopeHooks(False, None, None)
    if "embedding" in text[repo.end() :]:
        raise ValueError(f"{location}: Gemma Scope embedding SAEs are not supported")
    block = f"blocks.{int(layer.group(1))}."
    if repo.group(1) == "transcoders":
        return GemmaScopeHooks(True, block + "ln2.hook_normalized", block + "hook_mlp_out")
    name = block + _SITES[repo.group(1)]
    return GemmaScopeHooks(False, name, name)


def _weights(raw: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    # SAELens' loader accepts w_enc / w_dec spellings too
    w = {("W_" + key[2:] if key.startswith("w_") else key): value for key, value in raw.items()}
    scaling = w.pop("scaling_factor", None)
    if scaling is not None and not torch.allclose(scaling, torch.ones_like(scaling)):
        raise ValueError(f"{source}: a scaling_factor other than 1 is not supported")
    missing = [key for key in _KEYS if key not in w]
    unknown = sorted(set(w) - set(_KEYS))
    if missing or unknown:
        raise ValueError(f"{source}: not a Gemma Scope params.npz: missing {missing}, unexpected {unknown}")
    return w


def sparse_coder_from_npz_weights(
    w: dict[str, Tensor],
    *,
    transcoder: bool,
    hook_in: str | None,
    hook_out: str | None,
    conventions: HookConventions | None,
    fmt: str,
    source: str,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> SparseCoder:
    """A JumpReLU coder from W_enc/W_dec/b_enc/b_dec/threshold (SAELens orientation)."""
    if w["W_enc"].ndim != 2 or w["W_dec"].ndim != 2:
        raise ValueError(f"{source}: W_enc and W_dec must be matrices")
    d_in, n_latents = w["W_enc"].shape
    d_out = int(w["W_dec"].shape[1])
    reshape = bool(hook_in and hook_in.endswith("hook_z"))
    coder = SparseCoder(
        int(d_in),
        int(n_latents),
        activation="jumprelu",
        d_out=d_out,
        transcoder=transcoder,
        reshape_hook_z=reshape,
        info=SparseCoderInfo(
            format=fmt,
            source=source,
            architecture="jumprelu_transcoder" if transcoder else "jumprelu",
            hook_in=hook_in,
            hook_out=hook_out,
        ),
        conventions=conventions,
        dtype=dtype,
        device="meta",
    )
    coder.load_weights(w, source=source, device=device)
    return coder.requires_grad_(False)


def load_gemma_scope(
    path: str | os.PathLike[str],
    *,
    transcoder: bool | None = None,
    hook_in: str | None = None,
    hook_out: str | None = None,
    location: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    source: str | None = None,
) -> SparseCoder:
    """Load a Gemma Scope `params.npz` (the file, or a folder holding it). What it reads and
    writes comes from `location` (a repository id + folder) or the path's own folder names,
    unless given. Parameters are frozen."""
    file = Path(path)
    if file.is_dir():
        file = file / PARAMS_FILE
    source = source or str(file)
    hooks = gemma_scope_hooks(location or str(file.parent))
    transcoder = hooks.transcoder if transcoder is None else transcoder
    hook_in = hook_in or hooks.hook_in
    hook_out = hook_out or (hooks.hook_out if transcoder else hook_in)
    w = _weights(read_npz(file), source)
    return sparse_coder_from_npz_weights(
        w,
        transcoder=transcoder,
        hook_in=hook_in,
        hook_out=hook_out,
        conventions=conventions,
        fmt="gemma_scope",
        source=source,
        dtype=dtype,
        device=device,
    )
