"""Residual-stream scalars: the stream itself and the sublayers' writes, their norms, their
projections on the direct effects' direction, the norm scales, the embeddings' token
attribution. One "layer" node per token for norms and projections, d_model residual-channel
nodes for the vectors."""

from __future__ import annotations

import torch
from torch import Tensor

from neuron_explainer.debugger import reads
from neuron_explainer.debugger.inference import Site
from neuron_explainer.debugger.scalars.base import (
    ATTN,
    DIRECTION,
    MLP,
    RESID_POST_ATTN,
    RESID_POST_MLP,
    Check,
    Context,
    Direction,
    Inputs,
    ScalarType,
    Unsupported,
    masked_unless,
    precedes,
)
from neuron_explainer.debugger.scalars.weights import Weights

CHANNEL = "residual_stream_channel"
LAYER = "layer"


def _no_post_attn(w: Weights, ctx: Context | None) -> str | None:
    if w.model.cfg.parallel:
        return "this model's blocks are parallel: there is no residual stream between attention and the MLP"
    return None


def raw(location: str, node_type: str = CHANNEL, layered: bool = True, where: int | None = None, check: Check | None = None) -> ScalarType:
    """The activation at a hook location itself."""

    def fn(x: Inputs, layer: int | None) -> Tensor:
        return x.act(location, layer)

    return ScalarType(node_type, layered, fn, acts=(location,), location=where, raw=location, check=check)


def norm(location: str, layered: bool = True, where: int | None = None, check: Check | None = None) -> ScalarType:
    """||x|| per token."""

    def fn(x: Inputs, layer: int | None) -> Tensor:
        return x.act(location, layer).norm(dim=-1, keepdim=True)

    return ScalarType(LAYER, layered, fn, acts=(location,), location=where, check=check)


def projection(location: str, layered: bool = True, where: int | None = None, check: Check | None = None) -> ScalarType:
    """x . (gradient at the direction) per token, zero where x does not precede the direction."""

    def fn(x: Inputs, layer: int | None) -> Tensor:
        v = x.act(location, layer)
        out = (v * x.direction_grad()).sum(-1, keepdim=True)
        return masked_unless(out, precedes(layer, where, x.ctx.direction))

    return ScalarType(LAYER, layered, fn, acts=(location,), grads=(DIRECTION,), location=where, check=check)


def token_attribution(x: Inputs, layer: int | None) -> Tensor:
    return (x.act("resid.post_emb") * x.grad("resid.post_emb")).sum(-1, keepdim=True)


def always_one(x: Inputs, layer: int | None) -> Tensor:
    return torch.ones(len(x.rec.tokens), 1, device=x.w.model.device)


def previous_layer_resid_post_mlp(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    return x.act("resid.post_emb") if layer == 0 else x.act("resid.post_mlp", layer - 1)


def needs_read(w: Weights, ctx: Context | None) -> str | None:
    """Scalars on a node's within-layer gradient need that node."""
    if ctx is not None and ctx.read is None:
        return (
            "needs a node whose gradient it projects on: give inferenceRequestSpec."
            "activationIndexForWithinLayerGrad, or trace a node"
        )
    return None


def read_sites(w: Weights, ctx: Context) -> set[Site]:
    return reads.read_sites(w, ctx.read) if ctx.read is not None else set()


def read_direction(x: Inputs) -> tuple[Tensor, Direction]:
    """(T, d_model) gradient of the request's read node w.r.t. the residual stream it reads,
    and that point of the stream (what precedes it can write to it directly)."""
    node = x.ctx.read
    if node is None:
        raise Unsupported("needs inferenceRequestSpec.activationIndexForWithinLayerGrad or a traced node")
    key = ("<read>", None)
    r = x.cached(key, lambda: reads.residual_read(x, node))
    return r, reads.input_direction(x.w, node.kind, node.layer)


def emb_onto_read(x: Inputs, layer: int | None) -> Tensor:
    r, _ = read_direction(x)
    return (x.act("resid.post_emb") * r).sum(-1, keepdim=True)


def table() -> dict[str, ScalarType]:
    return {
        "resid_post_embedding": raw("resid.post_emb", layered=False),
        "resid_post_attn": raw("resid.post_attn", where=RESID_POST_ATTN, check=_no_post_attn),
        "resid_post_mlp": raw("resid.post_mlp", where=RESID_POST_MLP),
        "resid_delta_attn": raw("resid.delta_attn", where=ATTN),
        "resid_delta_mlp": raw("resid.delta_mlp", where=MLP),
        "previous_layer_resid_post_mlp": ScalarType(
            CHANNEL, True, previous_layer_resid_post_mlp, acts=("resid.post_emb", "resid.post_mlp")
        ),
        "resid_final_layer_norm_scale": raw("resid.ln_f.scale", LAYER, layered=False),
        "attn_input_layer_norm_scale": raw("attn_ln.scale", LAYER),
        "mlp_input_layer_norm_scale": raw("mlp_ln.scale", LAYER),
        "resid_post_embedding_norm": norm("resid.post_emb", layered=False),
        "resid_post_attn_norm": norm("resid.post_attn", where=RESID_POST_ATTN, check=_no_post_attn),
        "resid_post_mlp_norm": norm("resid.post_mlp", where=RESID_POST_MLP),
        "attn_layer_write_norm": norm("resid.delta_attn", where=ATTN),
        "mlp_layer_write_norm": norm("resid.delta_mlp", where=MLP),
        "resid_post_embedding_proj_to_final_residual_grad": projection("resid.post_emb", layered=False),
        "resid_post_attn_proj_to_final_residual_grad": projection("resid.post_attn", where=RESID_POST_ATTN, check=_no_post_attn),
        "resid_post_mlp_proj_to_final_residual_grad": projection("resid.post_mlp", where=RESID_POST_MLP),
        "attn_layer_write_to_final_residual_grad": projection("resid.delta_attn", where=ATTN),
        "mlp_layer_write_to_final_residual_grad": projection("resid.delta_mlp", where=MLP),
        "resid_post_embedding_proj_to_final_activation_residual_grad": ScalarType(
            LAYER, False, emb_onto_read, acts=("resid.post_emb",), check=needs_read, reads=read_sites
        ),
        "token_attribution": ScalarType(
            LAYER, False, token_attribution, acts=("resid.post_emb",), grads=("resid.post_emb",)
        ),
        "always_one": ScalarType(LAYER, False, always_one),
    }
