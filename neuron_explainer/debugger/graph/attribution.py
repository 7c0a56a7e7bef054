"""An attribution graph for one prompt: nodes, the direct effects between them, and how it is
computed (circuit-tracer's algorithm, on our models and hooks).

Nodes, in this order (the adjacency's rows and columns, as circuit-tracer lays them out):

    features   every active transcoder latent at every position, (layer, position, latent),
               sorted; activation a = the latent's value
    errors     one per (layer, position), layer-major: the transcoder's error at that MLP
    tokens     one per position: the token's embedding (the position embedding, a constant of
               the prompt's length, is part of every node's bias)
    logits     the target's logit nodes (targets.py)

Edges: adjacency[t, s] is the direct effect of node s on node t's input, in the replacement
model (replacement.py): for a feature t, its pre-activation; for a logit, its combination of
logits. That is s's activation times the derivative of t's input with respect to it, where a
feature's activation scales its decoder row, an error's its error vector and a token's its
embedding, so that each node's incoming edges plus a bias (constants: position embeddings,
biases, frozen parts) add up to its input exactly.

Cost: one forward pass, then one batched backward pass per `batch_size` target nodes: the
logits first, then the features, all of them in order, or (when there are more than
`max_feature_nodes`) in order of their influence on what is computed so far, recomputed every
`update_interval` batches, as circuit-tracer does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.debugger.graph.coders import Transcoders, check_transcoders
from neuron_explainer.debugger.graph.pruning import (
    DEFAULT_EDGE_THRESHOLD,
    DEFAULT_NODE_THRESHOLD,
    Pruned,
    partial_influence,
    prune,
)
from neuron_explainer.debugger.graph.replacement import ReplacementForward
from neuron_explainer.debugger.graph.targets import (
    LogitNode,
    Target,
    TopLogits,
    logit_nodes,
    residual_directions,
)
from neuron_explainer.models.transformer import Transformer

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_FEATURE_NODES",
    "AttributionGraph",
    "GraphSettings",
    "GraphTooLarge",
    "attribute",
]

DEFAULT_MAX_FEATURE_NODES = 7500  # circuit-tracer's command line
DEFAULT_BATCH_SIZE = 256
Progress = Callable[[int, int], None]  # (target nodes done, target nodes in all)


class GraphTooLarge(ValueError):
    """The adjacency this graph needs is larger than allowed."""


@dataclass(frozen=True)
class GraphSettings:
    target: str
    max_feature_nodes: int | None
    batch_size: int
    exclude_first_position: bool
    update_interval: int
    max_n_logits: int | None = None
    desired_logit_prob: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttributionGraph:
    """The unpruned graph (see the module docstring for the node order and edge definition).

    tokens          the prompt's token ids (T)
    features        (F, 3) int64: layer, position, latent of each feature node
    activations     (F,) the features' activations
    pre_activations (F,) their pre-activations (what their incoming edges sum to, with a bias)
    logit_nodes     the logit nodes
    adjacency       (N, N) float32 [target, source]
    error_norms     (n_layers, T) the norms of the error vectors
    n_active        how many latents were active (F <= n_active when capped)
    """

    tokens: list[int]
    n_layers: int
    features: Tensor
    activations: Tensor
    pre_activations: Tensor
    logit_nodes: list[LogitNode]
    adjacency: Tensor
    error_norms: Tensor
    n_active: int
    settings: GraphSettings
    timings: dict[str, float] = field(default_factory=dict)
    n_backward_passes: int = 0

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_logits(self) -> int:
        return len(self.logit_nodes)

    @property
    def n_nodes(self) -> int:
        return int(self.adjacency.shape[0])

    def error_index(self, layer: int, position: int) -> int:
        return self.n_features + layer * self.n_pos + position

    def token_index(self, position: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + position

    def logit_index(self, i: int) -> int:
        return self.n_nodes - self.n_logits + i

    def feature_index(self, layer: int, position: int, latent: int) -> int | None:
        hit = ((self.features == torch.tensor([layer, position, latent])).all(1)).nonzero()
        return int(hit[0, 0]) if len(hit) else None

    def prune(self, node_threshold: float = DEFAULT_NODE_THRESHOLD, edge_threshold: float = DEFAULT_EDGE_THRESHOLD) -> Pruned:
        """circuit-tracer's pruning (pruning.py); tokens and logits are always kept."""
        return prune(self.adjacency, self.logit_weights, self.n_features, self.n_pos + self.n_logits, node_threshold, edge_threshold)

    @property
    def logit_weights(self) -> Tensor:
        """(N,) zero but at the logit nodes, where it is their weight."""
        w = torch.zeros(self.n_nodes)
        w[self.n_nodes - self.n_logits :] = torch.tensor([n.weight for n in self.logit_nodes])
        return w


@contextlib.contextmanager
def _no_parameter_grads(*modules: torch.nn.Module) -> Iterator[None]:
    """Weights never need gradients here; with none, autograd keeps no state for them."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class _Features:
    """The active latents, sorted by (layer, position, latent)."""

    index: Tensor  # (n, 3)
    values: Tensor  # (n,)
    pre: Tensor  # (n,)
    encoders: list[Tensor]  # per layer (n_L, d_in): each feature's encoder vector
    decoders: list[dict[int, Tensor]]  # per layer, per layer written to: (n_L, d_model) activation * decoder row
    layer_start: list[int]  # per layer, the first feature's number (n_layers + 1 entries)
    position_slices: list[list[tuple[int, int, int]]]  # per layer: (position, start, end), local


def _active_features(fw: ReplacementForward, exclude_first: bool) -> _Features:
    rows, values, pre_all, encoders, decoders, starts, slices = [], [], [], [], [], [0], []
    for layer, state in enumerate(fw.layers):
        latents = state.latents.clone()
        if exclude_first:
            latents[0] = 0
        pos, idx = latents.nonzero(as_tuple=True)  # row-major: sorted by position, then latent
        acts = latents[pos, idx]
        rows.append(torch.stack([torch.full_like(pos, layer), pos, idx], 1))
        values.append(acts.float())
        pre_all.append(fw.pre_activations(layer)[pos, idx].float())
        encoders.append(fw.coders.encoder_vectors(layer, idx))
        decoders.append({to: fw.coders.decoder_vectors(layer, to, idx) * acts[:, None] for to in fw.coders.output_layers(layer)})
        starts.append(starts[-1] + len(pos))
        counts = torch.bincount(pos, minlength=fw.n_pos).tolist()
        edges = [0, *torch.tensor(counts).cumsum(0).tolist()]
        slices.append([(p, edges[p], edges[p + 1]) for p in range(fw.n_pos) if counts[p]])
    return _Features(
        torch.cat(rows).cpu(), torch.cat(values).cpu(), torch.cat(pre_all).cpu(), encoders, decoders, starts, slices
    )


class _RowComputer:
    """Turns batched backward passes into rows of direct effects on every source column
    [features (n_active), errors (n_layers * T), tokens (T)]."""

    def __init__(self, fw: ReplacementForward, feats: _Features, errors: Tensor, token_vectors: Tensor):
        self.fw, self.feats, self.errors, self.token_vectors = fw, feats, errors, token_vectors
        n_active = feats.layer_start[-1]
        self.error_start = n_active
        self.token_start = n_active + fw.n_layers * fw.n_pos
        self.n_columns = self.token_start + fw.n_pos
        self.passes = 0
        self.writers = [[s for s in range(fw.n_layers) if layer in fw.coders.output_layers(s)] for layer in range(fw.n_layers)]

    def rows(self, inject_inputs: dict[int, Tensor], inject_final: Tensor | None, batch: int) -> Tensor:
        fw, feats, T = self.fw, self.feats, self.fw.n_pos
        out = torch.zeros(batch, self.n_columns, device=fw.model.device)

        def on_write(layer: int, g: Tensor) -> None:
            for source in self.writers[layer]:  # the layers whose latents write here
                start, dec = feats.layer_start[source], feats.decoders[source][layer]
                for position, lo, hi in feats.position_slices[source]:
                    out[:, start + lo : start + hi] += g[:, position].to(dec.dtype) @ dec[lo:hi].T
            err = self.errors[layer]
            cols = slice(self.error_start + layer * T, self.error_start + (layer + 1) * T)
            out[:, cols] = torch.einsum("btd,td->bt", g.to(err.dtype), err)

        def on_embedding(g: Tensor) -> None:
            tok = self.token_vectors
            out[:, self.token_start :] = torch.einsum("btd,td->bt", g.to(tok.dtype), tok)

        fw.vjp(inject_inputs, inject_final, on_write, on_embedding)
        self.passes += 1
        return out.cpu()

    def feature_rows(self, chosen: Tensor) -> Tensor:
        """Rows of the features numbered `chosen` (their inputs: pre-activations)."""
        fw, feats = self.fw, self.feats
        layers = feats.index[chosen, 0]
        inject: dict[int, Tensor] = {}
        for layer in layers.unique().tolist():
            rows = (layers == layer).nonzero()[:, 0]
            local = chosen[rows] - feats.layer_start[layer]
            enc = feats.encoders[layer][local.to(feats.encoders[layer].device)]
            cot = torch.zeros(len(chosen), fw.n_pos, enc.shape[1], device=enc.device, dtype=enc.dtype)
            cot[rows.to(enc.device), feats.index[chosen[rows], 1].to(enc.device)] = enc
            inject[layer] = cot
        return self.rows(inject, None, len(chosen))

    def logit_rows(self, vectors: Tensor) -> Tensor:
        """Rows of logit nodes whose gradients at the final residual stream's last position are
        `vectors` (k, d_model)."""
        cot = torch.zeros(len(vectors), self.fw.n_pos, vectors.shape[1], device=vectors.device, dtype=vectors.dtype)
        cot[:, -1] = vectors
        return self.rows({}, cot, len(vectors))


def attribute(
    model: Transformer,
    transcoders: Transcoders,
    tokens: Sequence[int],
    target: Target | None = None,
    *,
    token_string: Callable[[int], str] = str,
    max_feature_nodes: int | None = DEFAULT_MAX_FEATURE_NODES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    exclude_first_position: bool = True,
    update_interval: int = 4,
    max_adjacency_bytes: int | None = None,
    progress: Progress | None = None,
) -> AttributionGraph:
    """The attribution graph of `tokens` for `target` (default: circuit-tracer's top logits).

    `transcoders`: one per layer (a TranscoderSet works), or a CrossLayerTranscoder, placed on
    this model's family (`load_transcoders` does it).
    `exclude_first_position`: no feature or error nodes at position 0, as circuit-tracer (which
    puts a BOS there): its latents and error stay in the forward pass as constants.
    `max_feature_nodes`: at most that many feature nodes, the most influential (None: all).
    `max_adjacency_bytes`: refuse (GraphTooLarge) a graph whose edge matrix would be larger.
    `progress(done, total)` is called after each backward pass. Raises ValueError on bad
    arguments or transcoders."""
    if not tokens:
        raise ValueError("the prompt has no tokens")
    if batch_size < 1 or update_interval < 1:
        raise ValueError("batch_size and update_interval must be at least 1")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ValueError("max_feature_nodes must be at least 0")
    target = target or TopLogits()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    started = clock
    coders = check_transcoders(model, transcoders)
    with _no_parameter_grads(model, *coders.modules()):
        fw = ReplacementForward(model, transcoders, tokens)
        try:
            graph = _attribute(
                fw, target, token_string, max_feature_nodes, batch_size, exclude_first_position, update_interval,
                max_adjacency_bytes, progress, lap,
            )
        finally:
            fw.release()
    timings["total"] = time.perf_counter() - started
    graph.timings = timings
    return graph


def _attribute(
    fw: ReplacementForward,
    target: Target,
    token_string: Callable[[int], str],
    max_feature_nodes: int | None,
    batch_size: int,
    exclude_first: bool,
    update_interval: int,
    max_bytes: int | None,
    progress: Progress | None,
    lap: Callable[[str], None],
) -> AttributionGraph:
    model, n, T = fw.model, fw.n_layers, fw.n_pos
    with torch.no_grad():
        feats = _active_features(fw, exclude_first)
        errors = torch.stack([s.error for s in fw.layers])  # (n, T, d)
        if exclude_first:
            errors[:, 0] = 0
        tokens = torch.tensor(fw.tokens, device=model.device)
        token_vectors = model.token_embeddings()[tokens]
    logit_list = logit_nodes(target, model, fw.logits[-1], token_string)
    k = len(logit_list)
    directions = torch.stack([node.direction for node in logit_list])
    logit_vectors = residual_directions(model, directions) / fw.final_scale[-1]
    lap("forward")

    n_active = feats.layer_start[-1]
    n_selected = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
    computer = _RowComputer(fw, feats, errors, token_vectors)
    n_columns = computer.n_columns
    needed = 4 * (n_selected + k) * n_columns + 4 * (n_selected + (n + 1) * T + k) ** 2
    if max_bytes is not None and needed > max_bytes:
        raise GraphTooLarge(
            f"this graph needs {needed / 2**20:.0f} MiB for its adjacency ({n_active} active latents over "
            f"{T} tokens, {n_selected} feature nodes); at most {max_bytes / 2**20:.0f} MiB is allowed: "
            "ask for fewer feature nodes or a shorter prompt"
        )
    edges = torch.zeros(n_selected + k, n_columns)
    row_nodes = torch.zeros(n_selected + k, dtype=torch.long)
    total_rows = n_selected + k
    done = 0

    def report(rows: int) -> None:
        nonlocal done
        done += rows
        if progress is not None:
            progress(done, total_rows)

    for lo in range(0, k, batch_size):
        hi = min(lo + batch_size, k)
        edges[lo:hi] = computer.logit_rows(logit_vectors[lo:hi])
        row_nodes[lo:hi] = n_columns + torch.arange(lo, hi)
        report(hi - lo)
    lap("logit_rows")

    weights = torch.tensor([node.weight for node in logit_list])
    visited = torch.zeros(n_active, dtype=torch.bool)
    filled = k
    while filled - k < n_selected:
        if n_selected == n_active:
            pending = torch.arange(n_active)
        else:
            scores = partial_influence(edges[:filled], row_nodes[:filled], weights, n_columns)[:n_active]
            ranked = scores.argsort(descending=True)
            pending = ranked[~visited[ranked]][: min(update_interval * batch_size, n_selected - (filled - k))]
        for lo in range(0, len(pending), batch_size):
            chosen = pending[lo : lo + batch_size]
            edges[filled : filled + len(chosen)] = computer.feature_rows(chosen)
            row_nodes[filled : filled + len(chosen)] = chosen
            visited[chosen] = True
            filled += len(chosen)
            report(len(chosen))
    lap("feature_rows")

    selected = visited.nonzero()[:, 0]
    columns = torch.cat([selected, torch.arange(n_active, n_columns)])
    n_nodes = n_selected + (n + 1) * T + k
    adjacency = torch.zeros(n_nodes, n_nodes)
    feature_rows = edges[k:][row_nodes[k:].argsort()]
    adjacency[:n_selected, : n_nodes - k] = feature_rows[:, columns]
    adjacency[n_nodes - k :, : n_nodes - k] = edges[:k][:, columns]
    del edges
    lap("assembly")
    settings = GraphSettings(
        target=type(target).__name__,
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
        exclude_first_position=exclude_first,
        update_interval=update_interval,
        max_n_logits=target.max_n_logits if isinstance(target, TopLogits) else None,
        desired_logit_prob=target.desired_logit_prob if isinstance(target, TopLogits) else None,
    )
    return AttributionGraph(
        tokens=list(fw.tokens),
        n_layers=n,
        features=feats.index[selected],
        activations=feats.values[selected],
        pre_activations=feats.pre[selected],
        logit_nodes=logit_list,
        adjacency=adjacency,
        error_norms=errors.float().norm(dim=-1).cpu(),
        n_active=n_active,
        settings=settings,
        n_backward_passes=computer.passes,
    )
