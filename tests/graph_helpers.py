"""Random models and random transcoders for the attribution graph tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from neuron_explainer.debugger.graph import CrossLayerTranscoder
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


def save_circuit_tracer_set(transcoders: list[SparseCoder], folder: Path, hook_in: str = "mlp.hook_in", hook_out: str = "mlp.hook_out") -> Path:
    """Write `transcoders` in circuit-tracer's transcoder-set layout (config.yaml and one
    layer_{i}.safetensors each: W_enc as (n_latents, d_in))."""
    folder.mkdir(parents=True, exist_ok=True)
    for layer, tc in enumerate(transcoders):
        tensors = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
        if tc.has_skip:
            tensors["W_skip"] = tc.W_skip
        if tc.activation == "jumprelu":
            tensors["activation_function.threshold"] = tc.threshold
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(folder / f"layer_{layer}.safetensors"))
    config = {"model_kind": "transcoder_set", "feature_input_hook": hook_in, "feature_output_hook": hook_out, "scan": "random-set"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def random_cross_layer_transcoder(
    model: Transformer, n_latents: int = 24, *, jumprelu: bool = False, skip: bool = False, seed: int = 0
) -> CrossLayerTranscoder:
    """A random cross-layer transcoder reading each MLP's input and writing to its own and every
    later MLP output."""
    from neuron_explainer.debugger.graph import conventions_for
    from neuron_explainer.models.saes.hook_names import hook_point_for

    n, d = model.cfg.n_layers, model.cfg.d_model
    hook_in = "ln2.hook_normalized" if model.cfg.sandwich_norms else "mlp.hook_in"
    conv = conventions_for(model)
    clt = CrossLayerTranscoder(
        n, n_latents, d, reads=[hook_point_for(f"blocks.{i}.{hook_in}", conv) for i in range(n)],
        writes=[f"blocks.{i}.resid.delta_mlp" for i in range(n)], jumprelu=jumprelu, skip=skip,
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clt.W_enc.copy_(torch.randn(clt.W_enc.shape, generator=gen) / d**0.5)
        clt.b_enc.copy_(torch.randn(clt.b_enc.shape, generator=gen) * 0.3 - 0.4)
        for w in clt.W_dec:
            w.copy_(torch.randn(w.shape, generator=gen) / n_latents**0.5)
        clt.b_dec.copy_(torch.randn(clt.b_dec.shape, generator=gen) * 0.1)
        if clt.threshold is not None:
            clt.threshold.copy_(torch.rand(clt.threshold.shape, generator=gen) * 0.4 - 0.1)
        if clt.W_skip is not None:
            clt.W_skip.copy_(torch.randn(clt.W_skip.shape, generator=gen) * 0.3 / d**0.5)
    return clt.requires_grad_(False)
