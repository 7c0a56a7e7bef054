"""Qwen Scope's layout: one `layer{L}.sae.pt` per layer in repositories named
`Qwen/SAE-Res-{model}-W{N}K-L0_{k}`: TopK SAEs on `blocks.{L}.hook_resid_post`.

    layer{L}.sae.pt   {"W_enc": (n_latents, d_in), "W_dec": (d_in, n_latents), "b_enc", "b_dec"}

Read as SAELens' Qwen Scope loader does: weights transposed to SAELens' orientation, TopK with
the k from the repository name, b_dec not subtracted from the input, no normalization.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from neuron_explainer.models.saes.files import read_torch_tensors
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.saelens_format import sparse_coder_from_saelens
from neuron_explainer.models.saes.sparse_coder import SparseCoder

__all__ = ["load_qwen_scope"]

_REPO = re.compile(r"SAE-Res-(.+)-W(\d+)K-L0_(\d+)")
_FILE = re.compile(r"layer(\d+)\.sae\.pt$")


def load_qwen_scope(
    path: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    source: str | None = None,
) -> SparseCoder:
    """Load a Qwen Scope `layer{L}.sae.pt`. Its repository's name gives k: `repo_id`, or the
    path itself (a Hugging Face cache path carries it: models--Qwen--SAE-Res-...)."""
    file = Path(path)
    source = source or str(file)
    repo, layer = _REPO.search(repo_id or str(file)), _FILE.search(file.name)
    if repo is None or layer is None:
        raise ValueError(f"{source}: expected layer<L>.sae.pt from a Qwen/SAE-Res-<model>-W<N>K-L0_<k> repository")
    raw = read_torch_tensors(file)
    missing = [key for key in ("W_enc", "W_dec", "b_enc", "b_dec") if key not in raw]
    if missing:
        raise ValueError(f"{source}: not a Qwen Scope SAE: missing {missing}")
    weights = {
        "W_enc": raw["W_enc"].T.contiguous(),
        "W_dec": raw["W_dec"].T.contiguous(),
        "b_enc": raw["b_enc"],
        "b_dec": raw["b_dec"],
    }
    n_latents, d_in = raw["W_enc"].shape
    cfg = {
        "architecture": "topk",
        "d_in": int(d_in),
        "d_sae": int(n_latents),
        "k": int(repo.group(3)),
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": {
            "sae_lens_version": "6.0.0",
            "hook_name": f"blocks.{int(layer.group(1))}.hook_resid_post",
            "model_name": model_name,
        },
    }
    return sparse_coder_from_saelens(
        cfg, weights, dtype=dtype, device=device, conventions=conventions, source=source, fmt="qwen_scope"
    )
