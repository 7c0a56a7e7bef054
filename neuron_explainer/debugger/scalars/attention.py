"""Attention heads: one node per (query token, key token, head), or per (token, head) for the
"per sequence token" scalars (summed over keys), or per flattened token pair. A head's write at
(q, k) is probs[q, k, h] * (v[k, h] @ W_h) (divided by the post-norm's scale at q under
sandwich norms); the maths is `debugger.head_writes`, shared with the records builder.

The API's layout of probabilities is (query, key, head); head_writes takes the model's
(head, query, key)."""

from __future__ import annotations

import torch
from torch import Tensor

from neuron_explainer.debugger import head_writes as hw
from neuron_explainer.debugger.scalars.base import (
    ATTN,
    ATTN_WRITE_SCALE,
    DIRECTION,
    Context,
    Inputs,
    ScalarFn,
    ScalarType,
    Unsupported,
    masked_unless,
    precedes,
    scaled,
)
from neuron_explainer.debugger.scalars.kinds import ATTN_LATENTS, BY_NODE_TYPE
from neuron_explainer.debugger.scalars.residual import (
    CHANNEL,
    LAYER,
    needs_read,
    read_direction,
    read_sites,
)
from neuron_explainer.debugger.scalars.weights import Weights

HEAD = "attention_head"
PAIR_INPUTS = ("attn.qk_probs", "attn.v", ATTN_WRITE_SCALE)


def probs(x: Inputs, layer: int) -> Tensor:
    """(h, q, k): the probabilities divided by the post-norm's scale at each query, if any (so
    that probs times a value's write is what joins the residual stream)."""
    return hw.through_post_norm(x.act("attn.qk_probs", layer).permute(2, 0, 1), x.write_scale(layer, "attn"))


def values(x: Inputs, layer: int) -> Tensor:
    """(k, h, e): each query head's values."""
    return x.w.model.expand_kv(x.act("attn.v", layer))


def _pair(fn_hqk: Tensor) -> Tensor:
    """(h, q, k) -> the API's (q, k, h)."""
    return fn_hqk.permute(1, 2, 0)


def raw(location: str, node_type: str, token_axes: int = 1) -> ScalarType:
    def fn(x: Inputs, layer: int | None) -> Tensor:
        return x.act(location, layer)

    return ScalarType(node_type, True, fn, acts=(location,), location=ATTN, raw=location, token_axes=token_axes)


def write_norm(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    return x.cached(("<attn write norms>", layer), lambda: _pair(hw.write_norms(probs(x, layer), values(x, layer), x.w.head_write_gram(layer))))


def act_times_grad(x: Inputs, layer: int | None) -> Tensor:
    return x.act("attn.qk_probs", layer) * x.grad("attn.qk_probs", layer)


def _onto(x: Inputs, layer: int, directions: Tensor) -> Tensor:
    return hw.pair_writes_onto_query_directions(probs(x, layer), values(x, layer), x.w.head_write(layer), directions)


def direct(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    out = x.cached(("<attn direct>", layer), lambda: _onto(x, layer, x.direction_grad()))
    return masked_unless(out, precedes(layer, ATTN, x.ctx.direction))


def onto_read(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    r, point = read_direction(x)
    return masked_unless(_onto(x, layer, r), precedes(layer, ATTN, point))


def flattened(fn: ScalarFn) -> ScalarFn:
    """The same scalar over the flattened lower triangle of token pairs: (pairs, heads)."""

    def flat(x: Inputs, layer: int | None) -> Tensor:
        return hw.flatten_pairs(fn(x, layer))

    return flat


# ---- per sequence token: summed over the keys


def _weighted_values(x: Inputs, layer: int) -> Tensor:
    return x.act("attn.v_out", layer)  # (T, h, e): sum over keys of probs * values


def write_norm_per_token(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    norms = hw.value_write_norms(_weighted_values(x, layer), x.w.head_write_gram(layer))
    return scaled(norms, x.write_scale(layer, "attn"))


def direct_per_token(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    projected = torch.einsum("the,hed,td->th", _weighted_values(x, layer), x.w.head_write(layer), x.direction_grad())
    out = scaled(projected, x.write_scale(layer, "attn"))
    return masked_unless(out, precedes(layer, ATTN, x.ctx.direction))


def act_times_grad_per_token(x: Inputs, layer: int | None) -> Tensor:
    return act_times_grad(x, layer).sum(1)


# ---- vectors


def _value_writes(x: Inputs, layer: int) -> Tensor:
    return torch.einsum("khe,hed->khd", values(x, layer), x.w.head_write(layer))


def writes(x: Inputs, layer: int | None) -> Tensor:
    """(q, k, h, d_model): each head's write at each token pair."""
    assert layer is not None
    return _pair(probs(x, layer))[..., None] * _value_writes(x, layer)[None]


def writes_sum_heads(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    return torch.einsum("hqk,khd->qkd", probs(x, layer), _value_writes(x, layer))


def weighted_values(x: Inputs, layer: int | None) -> Tensor:
    """(q, k, h, d_head): probs * value, before the output matrix (the seed's)."""
    assert layer is not None
    return x.act("attn.qk_probs", layer)[..., None] * values(x, layer)[None]


def _size_writes(w: Weights, n: int) -> int:
    return n * n * w.model.cfg.n_heads * w.model.cfg.d_model


def _size_writes_sum(w: Weights, n: int) -> int:
    return n * n * w.model.cfg.d_model


def _size_weighted(w: Weights, n: int) -> int:
    return n * n * w.model.cfg.n_heads * w.model.cfg.d_head


# ---- writes onto an attention latent's encoder row (its pre-activation reads the layer's
# write): the request's read node, or every latent at once ("batched")


def _latent_layers(w: Weights, ctx: Context | None) -> list[int]:
    return [layer for layer in w.latent_layers(ATTN_LATENTS) if w.reads(ATTN_LATENTS, layer) == "resid.delta_attn"]


def _check_latents(w: Weights, ctx: Context | None) -> str | None:
    if not _latent_layers(w, ctx):
        return "needs an attention autoencoder reading the attention layer's write (resid.delta_attn)"
    return None


def _check_read_latent(w: Weights, ctx: Context | None) -> str | None:
    missing = _check_latents(w, ctx)
    if missing or ctx is None:
        return missing
    node = ctx.read
    if node is None or BY_NODE_TYPE.get(node.kind) is None or BY_NODE_TYPE[node.kind].hook != ATTN_LATENTS:
        return (
            "needs the attention latent it projects on: inferenceRequestSpec."
            "activationIndexForWithinLayerGrad (online_autoencoder_latent at [\"All\", latent])"
        )
    if node.layer not in _latent_layers(w, ctx):
        return f"no attention autoencoder reading resid.delta_attn at layer {node.layer}"
    return None


def _read_layer(w: Weights, ctx: Context | None) -> list[int]:
    return [ctx.read.layer] if ctx is not None and ctx.read is not None else []


def _read_latent(x: Inputs, layer: int) -> tuple[Tensor, Tensor]:
    """The read latent's encoder row (d_model,) and its derivative at each query (T,): d (the
    latent at its token, or summed over all tokens) / d its pre-activation."""
    node = x.ctx.read
    assert node is not None
    if node.layer != layer:
        raise Unsupported(f"the latent of activationIndexForWithinLayerGrad is at layer {node.layer}, not {layer}")
    latent = node.index[-1]
    assert latent is not None
    derivative = hw.latent_derivative(x.act(ATTN_LATENTS, layer)[:, latent])
    if node.index[0] is not None:
        derivative = derivative * (torch.arange(derivative.shape[0], device=derivative.device) == node.index[0])
    return x.w.encoder(ATTN_LATENTS, layer)[latent], derivative


def write_to_latent(x: Inputs, layer: int | None) -> Tensor:
    """(q, k, h): each head's write at each pair projected on the latent's input gradient."""
    assert layer is not None
    row, derivative = _read_latent(x, layer)
    onto = hw.head_write_onto(x.w.head_write(layer), row[None])
    return hw.pair_writes_onto_rows_per_head(probs(x, layer), values(x, layer), onto)[0] * derivative[:, None, None]


def write_to_latent_sum_heads(x: Inputs, layer: int | None) -> Tensor:
    """(q, k, 1): summed over heads."""
    assert layer is not None
    row, derivative = _read_latent(x, layer)
    onto = hw.head_write_onto(x.w.head_write(layer), row[None])
    per_pair = hw.pair_writes_onto_rows(probs(x, layer), values(x, layer), onto)[0]  # (q, k)
    return (per_pair * derivative[:, None])[..., None]


def write_to_latent_per_token(x: Inputs, layer: int | None) -> Tensor:
    """(T, h): the heads' writes summed over keys, projected on the latent's input gradient."""
    assert layer is not None
    row, derivative = _read_latent(x, layer)
    projected = torch.einsum("the,hed,d->th", _weighted_values(x, layer), x.w.head_write(layer), row)
    return scaled(projected, x.write_scale(layer, "attn")) * derivative[:, None]


def _all_latents(x: Inputs, layer: int) -> tuple[Tensor, Tensor]:
    onto = hw.head_write_onto(x.w.head_write(layer), x.w.encoder(ATTN_LATENTS, layer))  # (h, e, l)
    return onto, hw.latent_derivative(x.act(ATTN_LATENTS, layer))  # (T, l)


def write_to_latents_flat(x: Inputs, layer: int | None) -> Tensor:
    """(pairs, n_latents): every latent's attribution to each token pair (the records')."""
    assert layer is not None
    onto, derivative = _all_latents(x, layer)
    attr = hw.pair_writes_onto_rows(probs(x, layer), values(x, layer), onto)  # (l, q, k)
    attr = attr * derivative.T[:, :, None]
    return hw.flatten_pairs(attr.permute(1, 2, 0))


def write_to_latents_per_token(x: Inputs, layer: int | None) -> Tensor:
    """(T, h, n_latents)."""
    assert layer is not None
    onto, derivative = _all_latents(x, layer)
    projected = scaled(torch.einsum("the,hel->thl", _weighted_values(x, layer), onto), x.write_scale(layer, "attn"))
    return projected * derivative[:, None, :]


def _size_latents_flat(w: Weights, n: int) -> int:
    return n * (n + 1) // 2 * _n_latents(w)


def _size_latents_per_token(w: Weights, n: int) -> int:
    return n * w.model.cfg.n_heads * _n_latents(w)


def _n_latents(w: Weights) -> int:
    layers = w.latent_layers(ATTN_LATENTS)
    return int(w.autoencoder(ATTN_LATENTS, layers[0])[0].n_latents) if layers else 0


def table() -> dict[str, ScalarType]:
    latents = ("attn.qk_probs", "attn.v", ATTN_WRITE_SCALE, ATTN_LATENTS)
    per_token = ("attn.v_out", ATTN_WRITE_SCALE)
    pairs = 2
    return {
        "attn_query": raw("attn.q", "qk_channel"),
        "attn_key": raw("attn.k", "qk_channel"),
        "attn_value": raw("attn.v", "v_channel"),
        "attn_qk_logits": raw("attn.qk_logits", HEAD, pairs),
        "attn_qk_probs": raw("attn.qk_probs", HEAD, pairs),
        "attn_weighted_sum_of_values": raw("attn.v_out", "v_channel"),
        "unflattened_attn_write_norm": ScalarType(HEAD, True, write_norm, acts=PAIR_INPUTS, location=ATTN, token_axes=pairs),
        "unflattened_attn_act_times_grad": ScalarType(
            HEAD, True, act_times_grad, acts=("attn.qk_probs",), grads=("attn.qk_probs",), location=ATTN, token_axes=pairs
        ),
        "unflattened_attn_write_to_final_residual_grad": ScalarType(
            HEAD, True, direct, acts=PAIR_INPUTS, grads=(DIRECTION,), location=ATTN, token_axes=pairs
        ),
        "unflattened_attn_write_to_final_activation_residual_grad": ScalarType(
            HEAD, True, onto_read, acts=PAIR_INPUTS, location=ATTN, token_axes=pairs, check=needs_read, reads=read_sites
        ),
        "attn_write_norm": ScalarType(HEAD, True, flattened(write_norm), acts=PAIR_INPUTS, location=ATTN),
        "flattened_attn_post_softmax": ScalarType(
            HEAD, True, flattened(lambda x, layer: x.act("attn.qk_probs", layer)), acts=("attn.qk_probs",), location=ATTN
        ),
        "attn_act_times_grad": ScalarType(
            HEAD, True, flattened(act_times_grad), acts=("attn.qk_probs",), grads=("attn.qk_probs",), location=ATTN
        ),
        "attn_write_to_final_residual_grad": ScalarType(
            HEAD, True, flattened(direct), acts=PAIR_INPUTS, grads=(DIRECTION,), location=ATTN
        ),
        "attn_write_norm_per_sequence_token": ScalarType(HEAD, True, write_norm_per_token, acts=per_token, location=ATTN),
        "attn_write_to_final_residual_grad_per_sequence_token": ScalarType(
            HEAD, True, direct_per_token, acts=per_token, grads=(DIRECTION,), location=ATTN
        ),
        "attn_act_times_grad_per_sequence_token": ScalarType(
            HEAD, True, act_times_grad_per_token, acts=("attn.qk_probs",), grads=("attn.qk_probs",), location=ATTN
        ),
        "attn_write": ScalarType(CHANNEL, True, writes, acts=PAIR_INPUTS, location=ATTN, token_axes=pairs, elements=_size_writes),
        "attn_write_sum_heads": ScalarType(
            CHANNEL, True, writes_sum_heads, acts=PAIR_INPUTS, location=ATTN, token_axes=pairs, elements=_size_writes_sum
        ),
        "attn_weighted_value": ScalarType(
            "v_channel", True, weighted_values, acts=("attn.qk_probs", "attn.v"), location=ATTN, token_axes=pairs,
            elements=_size_weighted,
        ),
        "attn_write_to_latent": ScalarType(
            HEAD, True, write_to_latent, acts=latents, location=ATTN, token_axes=pairs, check=_check_read_latent, layers=_read_layer
        ),
        "attn_write_to_latent_summed_over_heads": ScalarType(
            LAYER, True, write_to_latent_sum_heads, acts=latents, location=ATTN, token_axes=pairs,
            check=_check_read_latent, layers=_read_layer,
        ),
        "flattened_attn_write_to_latent_summed_over_heads": ScalarType(
            LAYER, True, flattened(write_to_latent_sum_heads), acts=latents, location=ATTN,
            check=_check_read_latent, layers=_read_layer,
        ),
        "attn_write_to_latent_per_sequence_token": ScalarType(
            HEAD, True, write_to_latent_per_token, acts=(*per_token, ATTN_LATENTS), location=ATTN,
            check=_check_read_latent, layers=_read_layer,
        ),
        "flattened_attn_write_to_latent_summed_over_heads_batched": ScalarType(
            "autoencoder_latent", True, write_to_latents_flat, acts=latents, location=ATTN,
            check=_check_latents, layers=_latent_layers, elements=_size_latents_flat,
        ),
        "attn_write_to_latent_per_sequence_token_batched": ScalarType(
            "autoencoder_latent", True, write_to_latents_per_token, acts=(*per_token, ATTN_LATENTS), location=ATTN,
            check=_check_latents, layers=_latent_layers, elements=_size_latents_per_token,
        ),
    }
