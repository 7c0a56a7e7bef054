"""Attaching the community's sparse coders to our model, as debugger nodes.

Where a coder sits decides what kind of node its latents are, and the name of their hook point:

    kind          reads / writes                                     latents hook point
    resid         blocks.L.resid.post_attn or .post_mlp (an SAE)     blocks.L.resid_autoencoder.latents
    mlp           blocks.L.resid.delta_mlp, mlp.post_act, mlp.out    blocks.L.mlp_autoencoder.latents
    attention     blocks.L.resid.delta_attn, attn.v_out (hook_z),    blocks.L.attn_autoencoder.latents
                  attn.out
    transcoder    reads the MLP's input (resid.post_mlp_ln,          blocks.L.transcoder.latents
                  mlp_ln.normalized, or the residual it normalizes),
                  writes its output (resid.delta_mlp, mlp.out)

(`mlp` and `attention` are the kinds OpenAI's autoencoders already are.) Coders elsewhere (an
SAE on the MLP input, on queries, ...) still run inside the forward pass with `model.attach`, but
their latents write nothing into the residual stream, so they are not debugger nodes and
`attach_as_node` refuses them with one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neuron_explainer.models.config import TransformerConfig
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.sparse_coder import SparseCoder
from neuron_explainer.models.transformer import Attachment, Transformer

__all__ = ["LATENT_POINTS", "attach_as_node", "attach_coders", "conventions_for", "latent_kind"]

# kind -> the hook location (inside block L) of its latents
LATENT_POINTS = {
    "resid": "resid_autoencoder.latents",
    "mlp": "mlp_autoencoder.latents",
    "attention": "attn_autoencoder.latents",
    "transcoder": "transcoder.latents",
}
_SAE_KINDS = {
    "resid.post_attn": "resid",
    "resid.post_mlp": "resid",
    "resid.delta_mlp": "mlp",
    "mlp.post_act": "mlp",
    "mlp.out": "mlp",
    "resid.delta_attn": "attention",
    "attn.v_out": "attention",
    "attn.out": "attention",
}
_MLP_INPUTS = ("resid.post_mlp_ln", "mlp_ln.normalized", "resid.post_attn")
_MLP_OUTPUTS = ("resid.delta_mlp", "mlp.out")


def conventions_for(cfg: TransformerConfig) -> HookConventions:
    """The family facts TransformerLens hook names depend on, for a model config."""
    return HookConventions(
        parallel_attn_mlp=cfg.parallel, norms_after_sublayers=cfg.sandwich_norms, rms_norm=cfg.norm == "rmsnorm"
    )


def _split(name: str) -> tuple[int, str]:
    if not name.startswith("blocks."):
        raise ValueError(f"{name} is outside the blocks: no debugger node kind for latents there")
    _, layer, location = name.split(".", 2)
    return int(layer), location


def latent_kind(reads: str, writes: str) -> tuple[str, int]:
    """(kind, layer) of a coder's latents; ValueError (one line) where they are not nodes."""
    if reads == writes:
        layer, location = _split(reads)
        if location not in _SAE_KINDS:
            raise ValueError(
                f"an SAE on {location} is not a debugger node (its latents write nothing into the "
                f"residual stream); SAEs are nodes on {', '.join(_SAE_KINDS)}"
            )
        return _SAE_KINDS[location], layer
    (in_layer, read), (layer, written) = _split(reads), _split(writes)
    reads_mlp_input = (read in _MLP_INPUTS and in_layer == layer) or (read == "resid.post_mlp" and in_layer == layer - 1)
    if not reads_mlp_input or written not in _MLP_OUTPUTS:
        raise ValueError(
            f"a transcoder from {reads} to {writes} is not a debugger node: transcoders read an "
            f"MLP's input ({', '.join(_MLP_INPUTS)}) and write its output ({', '.join(_MLP_OUTPUTS)})"
        )
    return "transcoder", layer


def attach_as_node(model: Transformer, coder: SparseCoder) -> Attachment:
    """Place `coder` on `model`'s family, check that it fits, and attach it; its latents are
    then nodes of their kind (see the module docstring)."""
    coder.place(conventions_for(model.cfg))
    if coder.reads is None or coder.writes is None:
        why = "; ".join(coder.info.unmapped_hooks) or "its file names no hook"
        raise ValueError(f"{coder.info.source}: cannot place it on this model ({why})")
    kind, layer = latent_kind(coder.reads, coder.writes)
    if layer >= model.cfg.n_layers:
        raise ValueError(f"{coder.info.source} sits at layer {layer}, but the model has {model.cfg.n_layers} layers")
    width = _width(model, coder.reads)
    if width is not None and coder.n_inputs != width and not coder.reshape_hook_z:
        raise ValueError(f"{coder.info.source} reads {coder.n_inputs} values but {coder.reads} has {width}")
    latents = f"blocks.{layer}.{LATENT_POINTS[kind]}"
    if any(a.latents == latents for a in model.attachments()):
        raise ValueError(f"{coder.info.source}: layer {layer} already has {kind} latents; attach one {kind} coder per layer")
    return model.attach(coder.to(model.device), coder.reads, latents, writes=coder.writes)


def attach_coders(model: Transformer, saes: Sequence[str], transcoders: str | None, device: str | torch.device | None = None) -> list[Attachment]:
    """The command lines' --sae (each a SAELens release:sae_id, hf://repo/path or folder) and
    --transcoders (a transcoder set): loaded, frozen, placed on the model's family and attached
    as debugger nodes."""
    from neuron_explainer.models.saes.circuit_tracer import transcoder_kind
    from neuron_explainer.models.saes.loading import load_sae, load_transcoder_set

    coders = [load_sae(spec, device=device) for spec in saes]
    # a cross-layer transcoder writes every later MLP: it replaces MLPs in attribution graphs
    # only, not as per-layer debugger nodes
    if transcoders and transcoder_kind(transcoders) == "transcoder_set":
        coders += list(load_transcoder_set(transcoders, device=device))
    attached = []
    for coder in coders:
        coder.requires_grad_(False)
        attached.append(attach_as_node(model, coder))
    return attached


def _width(model: Transformer, name: str) -> int | None:
    location = name.split(".", 2)[2]
    cfg = model.cfg
    if location.startswith(("resid.", "mlp_ln.", "attn_ln.")) or location in ("mlp.out", "attn.out"):
        return cfg.d_model
    if location.startswith("mlp."):
        return cfg.d_mlp
    if location == "attn.v_out":
        return cfg.d_attn
    return None
