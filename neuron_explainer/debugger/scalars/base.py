"""The parts every derived scalar is made of: what one needs (`ScalarType`), what it is computed
from (`Inputs`: one prompt's recording, the weights, the request's `Context`), and where in the
residual stream its writes join (`Direction`, `precedes`), which decides its direct effects.

A scalar's function returns, for one prompt and one layer, a tensor whose last axis is the node
axis: (T, n) for per-token nodes, (T_query, T_key, n) for token pairs, (pairs, n) for the
flattened lower triangle of token pairs (query 0 -> key 0, query 1 -> keys 0..1, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from neuron_explainer.debugger.inference import Recording, Site
from neuron_explainer.models.transformer import MODEL_LOCATIONS

if TYPE_CHECKING:
    from neuron_explainer.debugger.scalars.weights import Weights

# Where in a layer something sits, in the order of the forward pass (the seed's
# LocationWithinLayer): a node precedes a residual-stream point when its write joins the stream
# before that point.
END_OF_PREV_LAYER, ATTN, RESID_POST_ATTN, MLP, RESID_POST_MLP = 1, 2, 3, 4, 5


class Unsupported(ValueError):
    """This scalar cannot be computed for this model, these autoencoders or this request; the
    message (one line) says why (the server answers 400 with it)."""


@dataclass(frozen=True)
class Direction:
    """The residual-stream gradient direct effects are measured against: the gradient of what
    is differentiated, at `site`, the stream at (`layer`, `location`). Without a trace it is the
    stream after the last block; tracing a node, the stream just before the node's sublayer."""

    site: Site
    layer: int
    location: int


def precedes(layer: int | None, location: int | None, direction: Direction) -> bool:
    """Whether something at (`layer`, `location`) of the forward pass comes before the point of
    the residual stream `direction` is taken at (layerless things, the embeddings, always do)."""
    if layer is None:
        return True
    if layer != direction.layer:
        return layer < direction.layer
    assert location is not None
    return location < direction.location


@dataclass(frozen=True)
class ReadNode:
    """A node whose own gradient (the derivative of its traced quantity with respect to what it
    reads, within its layer) some scalars use: the node of `activationIndexForWithinLayerGrad`,
    or the traced node. `kind` is its node type; `index` the API's per-prompt indices, where a
    token of None means the node summed over every token."""

    kind: str
    layer: int
    index: tuple[int | None, ...]
    through: str | None = None  # attention heads: "Q", "K" or "QK"


@dataclass(frozen=True)
class Context:
    """What one prompt's request tells the scalars: the direct effects' direction, the node of
    within-layer gradients (`read`), and the node whose input tokens `vocab_token_write_to_input
    _direction` scores (`vocab`: the request's backward ablation)."""

    direction: Direction
    read: ReadNode | None = None
    vocab: ReadNode | None = None


def final_grad_site(n_layers: int) -> Site:
    """The residual stream after the last block (before the final norm)."""
    return Site("resid.post_mlp", n_layers - 1)


def final_direction(n_layers: int) -> Direction:
    return Direction(final_grad_site(n_layers), n_layers - 1, RESID_POST_MLP)


@dataclass
class Inputs:
    """One prompt's recording, the model's weights and the request's context."""

    rec: Recording
    w: Weights
    ctx: Context

    def act(self, location: str, layer: int | None = None) -> Tensor:
        return self.rec.activations[Site(location, None if location in MODEL_LOCATIONS else layer)].float()

    def grad(self, location: str, layer: int | None = None) -> Tensor:
        return self.rec.gradients[Site(location, None if location in MODEL_LOCATIONS else layer)].float()

    def direction_grad(self) -> Tensor:
        """(T, d_model): the gradient at the direct effects' direction."""
        return self.rec.gradients[self.ctx.direction.site].float()

    def write_scale(self, layer: int, sublayer: str | None) -> Tensor | None:
        """(T, 1): what divides `sublayer`'s writes at each token before they join the residual
        stream (its post-norm's scale, held constant), or None."""
        location = self.w.model.write_scale_location(sublayer) if sublayer else None
        return None if location is None else self.act(location, layer)

    def cached(self, key: tuple[str, int | None], make: Callable[[], Tensor]) -> Tensor:
        """A tensor shared by several scalars of this recording, computed once (while the
        recording's cache has room for it)."""
        return self.rec.derived.get(key, make)


def scaled(x: Tensor, scale: Tensor | None) -> Tensor:
    """Per-token values (T, ...) divided by a per-token scale (T, 1)."""
    if scale is None:
        return x
    return x / scale.reshape(scale.shape[0], *([1] * (x.ndim - 1)))


def masked_unless(x: Tensor, before: bool) -> Tensor:
    """x, or zeros where the node does not precede the direction (it cannot affect it directly)."""
    return x if before else torch.zeros_like(x)


ScalarFn = Callable[[Inputs, int | None], Tensor]
Check = Callable[["Weights", Context | None], str | None]
Sizer = Callable[["Weights", int], int]

# Stand-ins in ScalarType.acts / grads, resolved by `ScalarType.sites` for the model and request.
MLP_WRITE_SCALE = "<mlp write scale>"  # the per-token divisor of the MLP's writes (sandwich norms)
ATTN_WRITE_SCALE = "<attn write scale>"
DIRECTION = "<direction>"  # the gradient at the request's direction
WRITE_SCALES = {MLP_WRITE_SCALE: "mlp", ATTN_WRITE_SCALE: "attn"}


def latent_input(kind: str) -> str:
    """Stand-in for what the autoencoder of latent kind `kind` reads."""
    return f"<input of {kind}>"


@dataclass(frozen=True)
class ScalarType:
    """One derived scalar type: the node type its last axis indexes, whether it has a value per
    layer, the activations and gradients it reads, and its function.

    location: where in the layer its values sit (for direct effects: whether they precede the
        direction); None for what is not in a layer (embeddings, logits).
    raw: the hook location when the scalar is that activation itself; its backward-pass value is
        then the gradient there.
    check: why it cannot be computed for this model / autoencoders / request (one line), or None.
    layers: the layers it exists at (latents: where an autoencoder is attached; scalars of a
        request's read node: its layer); default all.
    token_axes: 2 for (query, key) scalars.
    elements: values per layer on a T-token prompt, for scalars whose size must be bounded.
    alias: the scalar it stands for, chosen by what the server has loaded (generic latents).
    reads: the extra sites the request context makes it need (within-layer reads), beyond acts.
    at_token: (1, ...) its values at one token, where that costs less than the whole tensor
        (the logits, from the last residual stream); None: the whole tensor's row.
    node_sums: (T,) its values summed over the node axis, likewise (one token axis only).
    """

    node_type: str
    layered: bool
    fn: ScalarFn
    acts: tuple[str, ...] = ()
    grads: tuple[str, ...] = ()
    location: int | Callable[[Weights, int], int] | None = None
    raw: str | None = None
    check: Check | None = None
    layers: Callable[[Weights, Context | None], list[int]] | None = None
    token_axes: int = 1
    elements: Sizer | None = None
    alias: Callable[[Weights], str] | None = None
    reads: Callable[[Weights, Context], set[Site]] | None = None
    at_token: Callable[[Inputs, int | None, int], Tensor] | None = None
    node_sums: ScalarFn | None = None

    def location_at(self, w: Weights, layer: int) -> int | None:
        if callable(self.location):
            return self.location(w, layer)
        return self.location

    def layer_list(self, w: Weights, ctx: Context | None = None) -> list[int | None]:
        if not self.layered:
            return [None]
        if self.layers is not None:
            return list(self.layers(w, ctx))
        return list(range(w.model.cfg.n_layers))


def project_on(directions: Tensor, writes: Tensor | Callable[[Tensor], Tensor]) -> Tensor:
    """(T, n): each token's direction (T, d_model) dotted with the writes (d_model, n), or
    passed to `writes(rows)` (what computes rows @ writes without the matrix), skipping tokens
    whose direction is zero (with a loss at the last token, all but one)."""
    rows = directions.abs().sum(-1).nonzero().flatten()
    projected = directions[rows] @ writes if isinstance(writes, Tensor) else writes(directions[rows])
    out = directions.new_zeros(directions.shape[0], projected.shape[1])
    out[rows] = projected
    return out
