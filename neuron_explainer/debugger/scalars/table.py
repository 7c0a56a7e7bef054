"""The one table of derived scalars (`SCALARS`, wire name -> ScalarType), what computing some of
them needs recorded (`sites_needed`), why one cannot be computed here (`problem`), and the
computation itself (`compute`, cached per recording)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from neuron_explainer.debugger.inference import Recording, Site
from neuron_explainer.debugger.scalars import attention, latents, mlp, residual, vocab
from neuron_explainer.debugger.scalars.base import (
    DIRECTION,
    WRITE_SCALES,
    Context,
    Inputs,
    ScalarType,
    Unsupported,
    final_direction,
)
from neuron_explainer.debugger.scalars.kinds import BY_HOOK
from neuron_explainer.debugger.scalars.weights import Weights
from neuron_explainer.models.transformer import MODEL_LOCATIONS, Transformer

# The most values a request may make one scalar hold over all its layers (float32: 128 MiB);
# the per-node write vectors (attn_write, mlp_write, ...) reach it on long prompts.
MAX_ELEMENTS = 1 << 25


def _make_table() -> dict[str, ScalarType]:
    table: dict[str, ScalarType] = {}
    for part in (residual.table(), mlp.table(), attention.table(), latents.table(), vocab.table()):
        overlap = table.keys() & part.keys()
        assert not overlap, f"scalars defined twice: {sorted(overlap)}"
        table.update(part)
    return table


SCALARS: dict[str, ScalarType] = _make_table()


def resolve(name: str, w: Weights) -> tuple[str, ScalarType]:
    """The scalar `name` computes as (generic latent scalars: the loaded kind's); Unsupported if
    that is ambiguous."""
    st = SCALARS[name]
    if st.alias is not None:
        name = st.alias(w)
        st = SCALARS[name]
    return name, st


def default_context(w: Weights) -> Context:
    return Context(final_direction(w.model.cfg.n_layers))


def problem(name: str, w: Weights, ctx: Context | None = None, n_tokens: int | None = None) -> str | None:
    """Why `name` cannot be computed for this model and request (one line), or None. Without a
    context, only what the model and its autoencoders decide."""
    try:
        _, st = resolve(name, w)
    except Unsupported as e:
        return str(e)
    if st.check is not None:
        reason = st.check(w, ctx)
        if reason:
            return reason
    if st.elements is not None and n_tokens is not None:
        layers = st.layer_list(w, ctx)
        total = st.elements(w, n_tokens) * max(1, len(layers))
        if total > MAX_ELEMENTS:
            return (
                f"{total:,} values for a {n_tokens}-token prompt over {len(layers)} layers, more than "
                f"this server computes at once ({MAX_ELEMENTS:,}); use a shorter prompt"
            )
    return None


def _sites(st: ScalarType, w: Weights, ctx: Context | None) -> tuple[set[Site], set[Site]]:
    model = w.model
    acts: set[Site] = set()
    grads: set[Site] = set()
    for layer in st.layer_list(w, ctx):
        for target, locations in ((acts, st.acts), (grads, st.grads)):
            for loc in locations:
                if loc in WRITE_SCALES:
                    scale = model.write_scale_location(WRITE_SCALES[loc])
                    if scale is not None and layer is not None:
                        target.add(Site(scale, layer))
                elif loc == DIRECTION:
                    target.add((ctx or default_context(w)).direction.site)
                elif loc.startswith("<input of "):
                    kind = loc.removeprefix("<input of ").removesuffix(">")
                    assert kind in BY_HOOK and layer is not None
                    target.add(Site(w.reads(kind, layer), layer))
                elif loc in MODEL_LOCATIONS:
                    target.add(Site(loc, None))
                else:
                    target.add(Site(loc, layer))
    if st.reads is not None and ctx is not None:
        acts |= st.reads(w, ctx)
    return acts, grads


def sites_needed(
    names: Iterable[str], model: Transformer | Weights, contexts: Sequence[Context | None] = (None,)
) -> tuple[set[Site], set[Site]]:
    """Activation and gradient sites that computing the scalars `names` needs, for every one of
    the requests' contexts (None: no trace, no read node)."""
    w = model if isinstance(model, Weights) else Weights(model)
    acts: set[Site] = set()
    grads: set[Site] = set()
    for name in names:
        try:
            _, st = resolve(name, w)
        except Unsupported:
            continue  # refused before anything runs
        for ctx in contexts or (None,):
            a, g = _sites(st, w, ctx)
            acts |= a
            grads |= g
    return acts, grads


def compute(name: str, rec: Recording, w: Weights, layer: int | None, ctx: Context | None = None) -> Tensor:
    """The scalar `name` at `layer` for one recording, cached on it while its cache has room
    (`ScalarCache`). The context is `ctx`, else the recording's, else no trace and no read node."""

    def make() -> Tensor:
        _, st = resolve(name, w)
        context = ctx or rec.context or default_context(w)
        with torch.no_grad():
            return st.fn(Inputs(rec, w, context), layer)

    return rec.derived.get((name, layer), make)


def compute_at_token(name: str, rec: Recording, w: Weights, layer: int | None, token: int) -> Tensor:
    """(1, ...): the scalar at one token (of a scalar with token axes): the whole tensor's row
    where it is computed already or the scalar has no cheaper way (`ScalarType.at_token`);
    cached on the recording as the whole is."""
    token %= len(rec.tokens)
    _, st = resolve(name, w)
    if st.at_token is None or (name, layer) in rec.derived:
        return compute(name, rec, w, layer)[token : token + 1]
    at_token = st.at_token

    def make() -> Tensor:
        with torch.no_grad():
            return at_token(Inputs(rec, w, rec.context or default_context(w)), layer, token)

    return rec.derived.get((f"{name}@{token}", layer), make)


def compute_node_sums(name: str, rec: Recording, w: Weights, layer: int | None) -> Tensor:
    """(T,): a one-token-axis scalar summed over its nodes (`ScalarType.node_sums` where it has
    a cheaper way than the whole tensor, and that is not computed already)."""
    _, st = resolve(name, w)
    if st.node_sums is None or (name, layer) in rec.derived:
        return compute(name, rec, w, layer).sum(-1)
    with torch.no_grad():
        return st.node_sums(Inputs(rec, w, rec.context or default_context(w)), layer)


def has_cheap_rows(name: str, w: Weights) -> bool:
    """Whether the scalar computes one token's values and its node sums without the whole."""
    _, st = resolve(name, w)
    return st.at_token is not None and st.node_sums is not None


def compute_backward(name: str, rec: Recording, w: Weights, layer: int | None) -> Tensor:
    """The scalar's backward-pass value: the gradient at its hook location, for the scalars that
    are an activation as it is (Unsupported for the others)."""
    _, st = resolve(name, w)
    if st.raw is None:
        raise Unsupported(f"{name} has no backward-pass value (only activations as recorded have gradients)")
    return Inputs(rec, w, rec.context or default_context(w)).grad(st.raw, layer)
