"""Random models and random transcoders for the attribution graph tests."""

from __future__ import annotations

from functools import cache

import torch

from neuron_explainer.models.loading import from_transformers
from neuron_explainer.models.random_models import hf_model
from neuron_explainer.models.saes import SparseCoder, SparseCoderInfo
from neuron_explainer.models.saes.sparse_coder import Activation
from neuron_explainer.models.transformer import Transformer


@cache
def random_model(family: str, seed: int = 0) -> Transformer:
    model = from_transformers(hf_model(family, seed=seed))
    return model.requires_grad_(False)


def random_transcoders(
    model: Transformer,
    n_latents: int = 40,
    *,
    activation: Activation = "relu",
    skip: bool = True,
    center_input: bool = False,
    seed: int = 0,
) -> list[SparseCoder]:
    """One transcoder per layer, reading the MLP's input the way published sets do (Gemma
    Scope's read the norm's output before its gain, others the MLP's input), writing what the
    MLP adds to the residual stream; about a third of the latents active on a token."""
    d = model.cfg.d_model
    gen = torch.Generator().manual_seed(seed)
    out = []
    for layer in range(model.cfg.n_layers):
        hook_in = f"blocks.{layer}.ln2.hook_normalized" if model.cfg.sandwich_norms else f"blocks.{layer}.mlp.hook_in"
        info = SparseCoderInfo(
            format="module", source="random", architecture="transcoder", hook_in=hook_in,
            hook_out=f"blocks.{layer}.hook_mlp_out",
        )
        tc = SparseCoder(
            d, n_latents, activation=activation, transcoder=True, skip=skip,
            k=8 if activation == "topk" else None, info=info,
        )
        weights = {
            "W_enc": torch.randn(d, n_latents, generator=gen) / d**0.5,
            "b_enc": torch.randn(n_latents, generator=gen) * 0.3 - 0.4,
            "W_dec": torch.randn(n_latents, d, generator=gen) / n_latents**0.5,
            "b_dec": torch.randn(d, generator=gen) * 0.1,
        }
        if skip:
            weights["W_skip"] = torch.randn(d, d, generator=gen) * 0.3 / d**0.5
        if activation == "jumprelu":
            weights["threshold"] = torch.rand(n_latents, generator=gen) * 0.4
        tc.load_weights(weights, source="random")
        tc.center_input = center_input
        out.append(tc.requires_grad_(False))
    return out
