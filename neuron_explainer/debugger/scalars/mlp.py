"""MLP neurons: one node per (token, neuron). A neuron's write is its activation times its
column of the MLP's output matrix (through the post-norm, its scale held, under sandwich norms)."""

from __future__ import annotations

from torch import Tensor

from neuron_explainer.debugger.scalars.base import (
    DIRECTION,
    MLP,
    MLP_WRITE_SCALE,
    Inputs,
    ScalarType,
    masked_unless,
    precedes,
    project_on,
    scaled,
)
from neuron_explainer.debugger.scalars.residual import (
    CHANNEL,
    needs_read,
    read_direction,
    read_sites,
)
from neuron_explainer.debugger.scalars.weights import Weights

NEURON = "mlp_neuron"


def _post(x: Inputs, layer: int) -> Tensor:
    return x.act("mlp.post_act", layer)


def raw(location: str) -> ScalarType:
    def fn(x: Inputs, layer: int | None) -> Tensor:
        return x.act(location, layer)

    return ScalarType(NEURON, True, fn, acts=(location,), location=MLP, raw=location)


def write_norm(x: Inputs, layer: int | None) -> Tensor:
    """activation x ||write column||: the write's length, with the activation's sign (the seed's)."""
    assert layer is not None
    return scaled(_post(x, layer) * x.w.mlp_write_norms(layer), x.write_scale(layer, "mlp"))


def act_times_grad(x: Inputs, layer: int | None) -> Tensor:
    return x.act("mlp.post_act", layer) * x.grad("mlp.post_act", layer)


def direct(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    out = scaled(_post(x, layer) * project_on(x.direction_grad(), x.w.mlp_write_onto(layer)), x.write_scale(layer, "mlp"))
    return masked_unless(out, precedes(layer, MLP, x.ctx.direction))


def onto_read(x: Inputs, layer: int | None) -> Tensor:
    assert layer is not None
    r, point = read_direction(x)
    out = scaled(_post(x, layer) * project_on(r, x.w.mlp_write_onto(layer)), x.write_scale(layer, "mlp"))
    return masked_unless(out, precedes(layer, MLP, point))


def layer_write(x: Inputs, layer: int | None) -> Tensor:
    """(T, d_model): the MLP's write without its bias, from its activations."""
    assert layer is not None
    return scaled(_post(x, layer) @ x.w.mlp_write(layer).T, x.write_scale(layer, "mlp"))


def neuron_writes(x: Inputs, layer: int | None) -> Tensor:
    """(T, d_mlp, d_model): each neuron's write vector."""
    assert layer is not None
    writes = _post(x, layer)[:, :, None] * x.w.mlp_write(layer).T[None]
    return scaled(writes, x.write_scale(layer, "mlp"))


def _writes_size(w: Weights, n_tokens: int) -> int:
    return n_tokens * w.model.cfg.d_mlp * w.model.cfg.d_model


def table() -> dict[str, ScalarType]:
    writes = ("mlp.post_act", MLP_WRITE_SCALE)
    return {
        "mlp_pre_act": raw("mlp.pre_act"),
        "mlp_post_act": raw("mlp.post_act"),
        "mlp_write_norm": ScalarType(NEURON, True, write_norm, acts=writes, location=MLP),
        "mlp_act_times_grad": ScalarType(NEURON, True, act_times_grad, acts=("mlp.post_act",), grads=("mlp.post_act",), location=MLP),
        "mlp_write_to_final_residual_grad": ScalarType(NEURON, True, direct, acts=writes, grads=(DIRECTION,), location=MLP),
        "mlp_write_to_final_activation_residual_grad": ScalarType(
            NEURON, True, onto_read, acts=writes, location=MLP, check=needs_read, reads=read_sites
        ),
        "resid_delta_mlp_from_mlp_post_act": ScalarType(CHANNEL, True, layer_write, acts=writes, location=MLP),
        "mlp_write": ScalarType(CHANNEL, True, neuron_writes, acts=writes, location=MLP, elements=_writes_size),
    }
