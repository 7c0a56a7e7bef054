"""Autoencoder latents, one node per (token, latent), for every kind in `kinds.LATENT_KINDS`
(the same scalars are made for each kind), plus the seed's generic names (which stand for the
one kind loaded), its post-hoc ("offline") latents, the autoencoders' errors and the latents'
input gradients.

A latent's write is its activation times its decoder column, sent through the MLP's output
matrix for latents of MLP activations (see `Weights.latent_write`); a latent sits where what
its autoencoder reads sits (the MLP or the attention layer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.debugger import head_writes as hw
from neuron_explainer.debugger.inference import Site
from neuron_explainer.debugger.scalars.base import (
    DIRECTION,
    MLP,
    MLP_WRITE_SCALE,
    Check,
    Context,
    Inputs,
    ScalarFn,
    ScalarType,
    latent_input,
    masked_unless,
    precedes,
    project_on,
    scaled,
)
from neuron_explainer.debugger.scalars.kinds import (
    ATTN_LATENTS,
    BY_NODE_TYPE,
    GENERIC_NODE_TYPE,
    LATENT_KINDS,
    MLP_LATENTS,
    LatentKind,
)
from neuron_explainer.debugger.scalars.residual import (
    CHANNEL,
    needs_read,
    read_direction,
    read_sites,
)
from neuron_explainer.debugger.scalars.weights import Weights


def _layers_of(kind: str) -> Callable[[Weights, Context | None], list[int]]:
    def layers(w: Weights, ctx: Context | None) -> list[int]:
        return w.latent_layers(kind)

    return layers


def _loaded(kind: LatentKind) -> Callable[[Weights, Context | None], str | None]:
    def check(w: Weights, ctx: Context | None) -> str | None:
        return None if w.latent_layers(kind.hook) else f"no {kind.label} autoencoder is loaded (start the server with one)"

    return check


def _with_write(kind: str, check: Callable[[Weights, Context | None], str | None]) -> Callable[[Weights, Context | None], str | None]:
    """Also refuses latents whose autoencoder reads something without a write here."""

    def both(w: Weights, ctx: Context | None) -> str | None:
        problem = check(w, ctx)
        if problem is None:
            for layer in w.latent_layers(kind):
                try:
                    w.latent_write(kind, layer)
                except ValueError as e:
                    return str(e)
        return problem

    return both


def _where(kind: str) -> Callable[[Weights, int], int]:
    def location(w: Weights, layer: int) -> int:
        return w.latent_location(kind, layer)

    return location


def _scale(x: Inputs, kind: str, layer: int) -> Tensor | None:
    return x.write_scale(layer, x.w.latent_write_sublayer(kind, layer))


def online_fns(kind: str) -> dict[str, ScalarFn]:
    def latent(x: Inputs, layer: int | None) -> Tensor:
        return x.act(kind, layer)

    def write_norm(x: Inputs, layer: int | None) -> Tensor:
        """activation x ||write column||, sign kept (the seed's)."""
        assert layer is not None
        return scaled(x.act(kind, layer) * x.w.latent_write_norms(kind, layer), _scale(x, kind, layer))

    def act_times_grad(x: Inputs, layer: int | None) -> Tensor:
        return x.act(kind, layer) * x.grad(kind, layer)

    def direct(x: Inputs, layer: int | None) -> Tensor:
        assert layer is not None
        out = scaled(x.act(kind, layer) * project_on(x.direction_grad(), x.w.latent_write(kind, layer)), _scale(x, kind, layer))
        return masked_unless(out, precedes(layer, x.w.latent_location(kind, layer), x.ctx.direction))

    def onto_read(x: Inputs, layer: int | None) -> Tensor:
        assert layer is not None
        r, point = read_direction(x)
        out = scaled(x.act(kind, layer) * project_on(r, x.w.latent_write(kind, layer)), _scale(x, kind, layer))
        return masked_unless(out, precedes(layer, x.w.latent_location(kind, layer), point))

    def writes(x: Inputs, layer: int | None) -> Tensor:
        """(T, n_latents, d_model)."""
        assert layer is not None
        out = x.act(kind, layer)[:, :, None] * x.w.latent_write(kind, layer).T[None]
        return scaled(out, _scale(x, kind, layer))

    def offline(x: Inputs, layer: int | None) -> Tensor:
        """The latents recomputed from the autoencoder's recorded input (unaffected by
        ablations of the online latents)."""
        assert layer is not None
        ae, reads = x.w.autoencoder(kind, layer)
        return ae.encode(x.act(reads, layer).to(ae.dtype)).float()

    def offline_write_norm(x: Inputs, layer: int | None) -> Tensor:
        assert layer is not None
        return scaled(offline(x, layer) * x.w.latent_write_norms(kind, layer), _scale(x, kind, layer))

    return {
        "latent": latent, "write_norm": write_norm, "act_times_grad": act_times_grad, "direct": direct,
        "onto_read": onto_read, "writes": writes, "offline": offline, "offline_write_norm": offline_write_norm,
    }


def _n_latents(kind: str) -> Callable[[Weights, int], int]:
    def size(w: Weights, n_tokens: int) -> int:
        layers = w.latent_layers(kind)
        n = w.autoencoder(kind, layers[0])[0].n_latents if layers else 0
        return n_tokens * int(n) * w.model.cfg.d_model

    return size


def kind_table(kind: LatentKind) -> dict[str, ScalarType]:
    f = online_fns(kind.hook)
    hook, node = kind.hook, kind.node_type
    # latents of MLP activations write through the MLP's post-norm, if there is one
    writes = (hook, MLP_WRITE_SCALE)
    loaded = _loaded(kind)
    with_write = _with_write(hook, loaded)
    p, off = kind.prefix, kind.offline_prefix

    def latent_scalar(fn: ScalarFn, acts: tuple[str, ...], check: Check, node_type: str = node, **more: Any) -> ScalarType:
        return ScalarType(node_type, True, fn, acts=acts, check=check, location=_where(hook), layers=_layers_of(hook), **more)

    return {
        f"{p}_latent": latent_scalar(f["latent"], (hook,), loaded, raw=hook),
        f"{p}_write_norm": latent_scalar(f["write_norm"], writes, with_write),
        f"{p}_act_times_grad": latent_scalar(f["act_times_grad"], (hook,), loaded, grads=(hook,)),
        f"{p}_write_to_final_residual_grad": latent_scalar(f["direct"], writes, with_write, grads=(DIRECTION,)),
        f"{p}_write_to_final_activation_residual_grad": latent_scalar(
            f["onto_read"], writes, _both(with_write, needs_read), reads=read_sites
        ),
        f"{p}_write": latent_scalar(f["writes"], writes, with_write, node_type=CHANNEL, elements=_n_latents(hook)),
        kind.offline: latent_scalar(f["offline"], (latent_input(hook),), loaded),
        f"{off}_write_norm": latent_scalar(f["offline_write_norm"], (latent_input(hook), MLP_WRITE_SCALE), with_write),
    }


def _both(*checks: Callable[[Weights, Context | None], str | None]) -> Callable[[Weights, Context | None], str | None]:
    def check(w: Weights, ctx: Context | None) -> str | None:
        for c in checks:
            problem = c(w, ctx)
            if problem:
                return problem
        return None

    return check


# ---- the seed's generic names: the one kind loaded


def _generic(suffix: str, offline: bool = False) -> ScalarType:
    def alias(w: Weights) -> str:
        kind = w.single_kind()
        return f"{kind.offline_prefix}_{suffix}" if offline else f"{kind.prefix}_{suffix}"

    def unreachable(x: Inputs, layer: int | None) -> Tensor:
        raise AssertionError("generic scalars are computed as their alias")

    return ScalarType(GENERIC_NODE_TYPE, True, unreachable, alias=alias)


GENERIC: dict[str, ScalarType] = {
    "online_autoencoder_latent": _generic("latent"),
    "online_autoencoder_write_norm": _generic("write_norm"),
    "online_autoencoder_act_times_grad": _generic("act_times_grad"),
    "online_autoencoder_write_to_final_residual_grad": _generic("write_to_final_residual_grad"),
    "online_autoencoder_write_to_final_activation_residual_grad": _generic("write_to_final_activation_residual_grad"),
    "online_autoencoder_write": _generic("write"),
    "autoencoder_latent": _generic("latent", offline=True),
    "autoencoder_write_norm": _generic("write_norm", offline=True),
}


# ---- the autoencoders' errors: what they fail to reconstruct, x - decode(encode(x)), which the
# model adds back; its gradient is the gradient at the autoencoder's output


def _error(kind: str) -> ScalarFn:
    def error(x: Inputs, layer: int | None) -> Tensor:
        assert layer is not None
        ae, reads = x.w.autoencoder(kind, layer)
        inputs = x.act(reads, layer)
        return inputs - ae.decode(ae.encode(inputs.to(ae.dtype))).float()

    return error


def _reads_check(kind: str, reads: str) -> Callable[[Weights, Context | None], str | None]:
    label = {MLP_LATENTS: "MLP", ATTN_LATENTS: "attention"}[kind]

    def check(w: Weights, ctx: Context | None) -> str | None:
        layers = w.latent_layers(kind)
        if not layers or any(w.reads(kind, layer) != reads for layer in layers):
            return f"needs an {label} autoencoder reading {reads}"
        return None

    return check


def _error_scalars() -> dict[str, ScalarType]:
    mlp_error = _error(MLP_LATENTS)
    on_post_act = _reads_check(MLP_LATENTS, "mlp.post_act")

    def act_times_grad(x: Inputs, layer: int | None) -> Tensor:
        return mlp_error(x, layer) * x.grad("mlp.post_act", layer)

    def write_norm(x: Inputs, layer: int | None) -> Tensor:
        assert layer is not None
        return scaled(mlp_error(x, layer) * x.w.mlp_write_norms(layer), x.write_scale(layer, "mlp"))

    def direct(x: Inputs, layer: int | None) -> Tensor:
        assert layer is not None
        out = scaled(mlp_error(x, layer) * project_on(x.direction_grad(), x.w.mlp_write_onto(layer)), x.write_scale(layer, "mlp"))
        return masked_unless(out, precedes(layer, MLP, x.ctx.direction))

    layers = _layers_of(MLP_LATENTS)
    post = ("mlp.post_act",)
    return {
        "online_mlp_autoencoder_error": ScalarType("mlp_neuron", True, mlp_error, acts=post, location=MLP, check=on_post_act, layers=layers),
        "online_mlp_autoencoder_error_act_times_grad": ScalarType(
            "mlp_neuron", True, act_times_grad, acts=post, grads=post, location=MLP, check=on_post_act, layers=layers
        ),
        "online_mlp_autoencoder_error_write_norm": ScalarType(
            "mlp_neuron", True, write_norm, acts=(*post, MLP_WRITE_SCALE), location=MLP, check=on_post_act, layers=layers
        ),
        "online_mlp_autoencoder_error_write_to_final_residual_grad": ScalarType(
            "mlp_neuron", True, direct, acts=(*post, MLP_WRITE_SCALE), grads=(DIRECTION,), location=MLP, check=on_post_act, layers=layers
        ),
        "online_residual_mlp_autoencoder_error": ScalarType(
            CHANNEL, True, mlp_error, acts=("resid.delta_mlp",), location=MLP,
            check=_reads_check(MLP_LATENTS, "resid.delta_mlp"), layers=layers,
        ),
        "online_residual_attention_autoencoder_error": ScalarType(
            CHANNEL, True, _error(ATTN_LATENTS), acts=("resid.delta_attn",), location=_where(ATTN_LATENTS),
            check=_reads_check(ATTN_LATENTS, "resid.delta_attn"), layers=_layers_of(ATTN_LATENTS),
        ),
    }


# ---- a latent's gradient w.r.t. its autoencoder's input (the request's read node)


def _input_grad(x: Inputs, layer: int | None) -> Tensor:
    """(T, n_inputs): d (the latent at its token, or summed over tokens) / d the autoencoder's
    input: its encoder row where it is on."""
    node = x.ctx.read
    assert node is not None and layer is not None
    kind = BY_NODE_TYPE[node.kind].hook
    latent = node.index[-1]
    assert latent is not None
    derivative = hw.latent_derivative(x.act(kind, layer)[:, latent])
    if node.index[0] is not None:
        derivative = derivative * (torch.arange(derivative.shape[0], device=derivative.device) == node.index[0])
    return derivative[:, None] * x.w.encoder(kind, layer)[latent][None]


def _read_latent_check(reads: tuple[str, ...]) -> Callable[[Weights, Context | None], str | None]:
    def check(w: Weights, ctx: Context | None) -> str | None:
        if ctx is None:
            return None
        node = ctx.read
        if node is None or node.kind not in BY_NODE_TYPE:
            return "needs the latent: inferenceRequestSpec.activationIndexForWithinLayerGrad (or trace a latent)"
        kind = BY_NODE_TYPE[node.kind].hook
        if node.layer not in w.latent_layers(kind) or w.reads(kind, node.layer) not in reads:
            return f"needs a latent of an autoencoder reading {' or '.join(reads)}"
        return None

    return check


def _read_layer(w: Weights, ctx: Context | None) -> list[int]:
    return [ctx.read.layer] if ctx is not None and ctx.read is not None else []


def _read_input_sites(w: Weights, ctx: Context) -> set[Site]:
    node = ctx.read
    if node is None or node.kind not in BY_NODE_TYPE:
        return set()
    return {Site(BY_NODE_TYPE[node.kind].hook, node.layer)}


def _grad_scalars() -> dict[str, ScalarType]:
    return {
        "autoencoder_latent_grad_wrt_residual_input": ScalarType(
            CHANNEL, True, _input_grad, check=_read_latent_check(("resid.delta_mlp", "resid.delta_attn")),
            layers=_read_layer, reads=_read_input_sites,
        ),
        "autoencoder_latent_grad_wrt_mlp_post_act_input": ScalarType(
            "mlp_neuron", True, _input_grad, check=_read_latent_check(("mlp.post_act",)),
            layers=_read_layer, reads=_read_input_sites,
        ),
    }


def table() -> dict[str, ScalarType]:
    t: dict[str, ScalarType] = {}
    for kind in LATENT_KINDS:
        t.update(kind_table(kind))
    t.update(GENERIC)
    t.update(_error_scalars())
    t.update(_grad_scalars())
    return t
