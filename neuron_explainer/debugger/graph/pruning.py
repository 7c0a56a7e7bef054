"""Influence and pruning, circuit-tracer's definitions (its defaults: keep the nodes that carry
80% of the influence on the logits, then the edges that carry 98%).

With A the adjacency (A[t, s]: direct effect of node s on node t's input), let Â be |A| with
each row divided by its sum: the fraction of t's (absolute) input that comes from s. Paths
compose by products of such fractions, so with w the logit weights (each logit node's
probability), the influence of node s on the output is

    influence = w Â + w Â² + w Â³ + ...

(finite: the graph is acyclic, so Â is nilpotent). Pruning keeps the fewest nodes whose
influence sums to `node_threshold` of the total (tokens and logits always kept); then, on the
graph of kept nodes, an edge's score is Â'[t, s] * (w + influence'(t)), the influence flowing
through it, and the fewest edges carrying `edge_threshold` of the total score are kept. Nodes
left without outgoing edges (or features without incoming ones) are dropped, until none is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Pruned", "cumulative_fraction", "edge_scores", "influence", "partial_influence", "prune", "threshold_for"]

DEFAULT_NODE_THRESHOLD = 0.8
DEFAULT_EDGE_THRESHOLD = 0.98
_MAX_DEPTH = 10_000  # a graph deeper than this has a cycle: a bug


def _row_normalized(matrix: Tensor) -> Tensor:
    a = matrix.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-10)


def _path_sum(normalized: Tensor, start: Tensor) -> Tensor:
    """start Â + start Â² + ... for a nilpotent Â."""
    total = torch.zeros_like(start)
    x = start
    for _ in range(_MAX_DEPTH):
        x = x @ normalized
        if not x.any():
            return total
        total += x
    raise RuntimeError("influence did not converge: the graph has a cycle")


def influence(adjacency: Tensor, logit_weights: Tensor) -> Tensor:
    """(N,) each node's influence on the output; `logit_weights` (N,) is zero but at logits."""
    return _path_sum(_row_normalized(adjacency), logit_weights)


def edge_scores(adjacency: Tensor, logit_weights: Tensor) -> Tensor:
    """(N, N): the influence on the output that flows through each edge."""
    normalized = _row_normalized(adjacency)
    through = _path_sum(normalized, logit_weights) + logit_weights
    return normalized * through[:, None]


def partial_influence(rows: Tensor, row_nodes: Tensor, logit_weights: Tensor, n_columns: int) -> Tensor:
    """(n_columns,) influence on the output from the rows computed so far: `rows` (r, C) are the
    incoming edges of nodes `row_nodes` (r,), logit nodes being C, C + 1, ... (they have no
    columns: nothing reads them); `logit_weights` (k,). What decides which feature to attribute
    next when not all are."""
    normalized = _row_normalized(rows)
    weights = torch.zeros(n_columns + len(logit_weights), device=rows.device)
    weights[n_columns:] = logit_weights.to(rows.device)
    total = torch.zeros(n_columns, device=rows.device)
    for _ in range(_MAX_DEPTH):
        x = weights[row_nodes] @ normalized
        if not x.any():
            return total
        total += x
        weights = torch.zeros_like(weights)
        weights[:n_columns] = x
    raise RuntimeError("influence did not converge: the graph has a cycle")


def threshold_for(scores: Tensor, fraction: float) -> Tensor:
    """The score at which the largest scores first add up to `fraction` of their total."""
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp(min=1e-30)
    index = int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype)))
    return ordered[min(index, len(ordered) - 1)]


def cumulative_fraction(scores: Tensor) -> Tensor:
    """(N,) for each node, the fraction of the total carried by it and every node scoring more
    (circuit-tracer's exported `influence`: the viewer's node-threshold slider compares it)."""
    ordered, order = scores.sort(descending=True)
    out = torch.empty_like(scores)
    out[order] = ordered.cumsum(0) / ordered.sum().clamp(min=1e-30)
    return out


@dataclass
class Pruned:
    """`node_mask` (N,) and `edge_mask` (N, N) [target, source] of what is kept; `influence`
    (N,) of the whole graph and its `cumulative` fraction per node; the thresholds used."""

    node_mask: Tensor
    edge_mask: Tensor
    influence: Tensor
    cumulative: Tensor
    node_threshold: float
    edge_threshold: float


def prune(
    adjacency: Tensor,
    logit_weights: Tensor,
    n_features: int,
    n_kept_always: int,
    node_threshold: float = DEFAULT_NODE_THRESHOLD,
    edge_threshold: float = DEFAULT_EDGE_THRESHOLD,
) -> Pruned:
    """Prune a graph whose nodes are [features (n_features), errors, tokens, logits]; the last
    `n_kept_always` (tokens and logits) are always kept."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    node_influence = influence(adjacency, logit_weights)
    node_mask = node_influence >= threshold_for(node_influence, node_threshold)
    node_mask[-n_kept_always:] = True
    kept = adjacency.clone()
    kept[~node_mask] = 0
    kept[:, ~node_mask] = 0
    scores = edge_scores(kept, logit_weights)
    edge_mask = scores >= threshold_for(scores, edge_threshold)
    edge_mask &= node_mask[:, None] & node_mask[None, :]
    # drop features and errors nothing reads, and features that read nothing, until none is left
    sources = slice(0, adjacency.shape[0] - n_kept_always)
    while True:
        before = node_mask.clone()
        node_mask[sources] &= edge_mask[:, sources].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        if torch.equal(before, node_mask):
            break
    return Pruned(node_mask, edge_mask, node_influence, cumulative_fraction(node_influence), node_threshold, edge_threshold)
